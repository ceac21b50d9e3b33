// Package upgrades holds the bridge's SQL schema as versioned upgrade files.
//
// 00-latest.sql is the whole schema for new databases; later files are numbered
// upgrades with a "-- vN -> vM: description" header (see go.mau.fi/util/dbutil).
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var rawUpgrades embed.FS

// Table is the upgrade table applied on start.
var Table = dbutil.BuildUpgradeTable().WithFS(rawUpgrades).Finish()
