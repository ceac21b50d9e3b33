package mapping

import json "github.com/segmentio/encoding/json"

// locationContent is what an m.location message has beyond body: geo_uri,
// and the MSC3488 (extensible events) blocks clients send along with it.
type locationContent struct {
	GeoURI           string         `json:"geo_uri"`
	Location         *locationBlock `json:"m.location"`
	UnstableLocation *locationBlock `json:"org.matrix.msc3488.location"`
	Asset            *assetBlock    `json:"m.asset"`
	UnstableAsset    *assetBlock    `json:"org.matrix.msc3488.asset"`
}

type locationBlock struct {
	URI         string `json:"uri"`
	Description string `json:"description"`
}

type assetBlock struct {
	Type string `json:"type"`
}

// addLocation adds an m.location message's geo_uri, description and
// asset_type to data; false when its content names no place.
func addLocation(data map[string]any, content json.RawMessage) bool {
	var c locationContent
	if json.Unmarshal(content, &c) != nil {
		return false
	}
	loc := c.Location
	if loc == nil {
		loc = c.UnstableLocation
	}
	uri := c.GeoURI
	if uri == "" && loc != nil {
		uri = loc.URI
	}
	if uri == "" {
		return false
	}
	data["geo_uri"] = uri
	if loc != nil && loc.Description != "" {
		data["description"] = loc.Description
	}
	asset := c.Asset
	if asset == nil {
		asset = c.UnstableAsset
	}
	if asset != nil && asset.Type != "" {
		data["asset_type"] = asset.Type
	}
	return true
}
