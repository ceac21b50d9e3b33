package benchkit

import (
	"os/exec"
	"strings"
)

// SourceRevision names the code under test for a report's header: the
// short commit and, when the bridge's own files (pkg, database, cmd/bridge,
// go.mod) have uncommitted changes, " with uncommitted changes to " and
// what changed says of them (others edit this tree while a run goes on).
// Best effort: without git, "unknown (no git)".
func SourceRevision(changed func(files []string) string) string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (no git)"
	}
	rev := strings.TrimSpace(string(out))
	// --no-optional-locks: reading the status must not take the index lock
	// from someone committing meanwhile.
	status, err := exec.Command("git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "--",
		"pkg", "database", "cmd/bridge", "go.mod").Output()
	if err == nil && len(strings.TrimSpace(string(status))) > 0 {
		var files []string
		for line := range strings.SplitSeq(strings.TrimRight(string(status), "\n"), "\n") {
			if len(line) > 3 {
				files = append(files, strings.TrimSpace(line[3:]))
			}
		}
		rev += " with uncommitted changes to " + changed(files)
	}
	return rev
}
