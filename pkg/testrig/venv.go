package testrig

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// Venv returns <repo root>/bin/<name>-venv, the virtual environment of a
// pinned Python tool (tools/<name>/requirements.txt, exact versions with
// hashes), installing it with tools/<name>/build.sh (what `make <name>` runs)
// when it is missing or older than requirements.txt. The build's output goes
// to buildLog as well as into the error.
func Venv(ctx context.Context, name string, buildLog io.Writer) (string, error) {
	root, err := dendriteRepoRoot()
	if err != nil {
		return "", err
	}
	venv := filepath.Join(root, "bin", name+"-venv")
	if fileNewer(filepath.Join(venv, ".installed"), filepath.Join(root, "tools", name, "requirements.txt")) {
		return venv, nil
	}
	script := filepath.Join("tools", name, "build.sh")
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, script))
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, buildLog)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("testrig: installing %s with %s (make %s): %w\n%s", name, script, name, err, LastLines(out.String(), 30))
	}
	if _, err := os.Stat(filepath.Join(venv, "bin", "python")); err != nil {
		return "", fmt.Errorf("testrig: %s (make %s) did not produce %s", script, name, venv)
	}
	return venv, nil
}

// fileNewer reports whether path exists and is newer than ref (or ref is
// missing, so there is nothing to compare with).
func fileNewer(path, ref string) bool {
	pi, err := os.Stat(path)
	if err != nil {
		return false
	}
	ri, err := os.Stat(ref)
	if err != nil {
		return true
	}
	return pi.ModTime().After(ri.ModTime())
}
