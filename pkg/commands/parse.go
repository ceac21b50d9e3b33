package commands

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// flagKind is the type of a command's --flag.
type flagKind int

const (
	boolFlag flagKind = iota
	intFlag
)

// args are a command's arguments with the flags taken out.
type args struct {
	pos   []string
	bools map[string]bool
	ints  map[string]int
}

// parseArgs splits words into positional arguments and the flags a command
// declares (--name, --name N or --name=N). An undeclared flag, a missing or
// bad value is an error; "--" ends the flags.
func parseArgs(words []string, flags map[string]flagKind) (args, error) {
	a := args{bools: map[string]bool{}, ints: map[string]int{}}
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "--" {
			a.pos = append(a.pos, words[i+1:]...)
			break
		}
		// Clients often turn "--" into an em or en dash.
		if rest, ok := cutDashes(w); ok {
			name, value, hasValue := strings.Cut(rest, "=")
			name = strings.ToLower(name)
			kind, known := flags[name]
			switch {
			case !known:
				return args{}, fmt.Errorf("unknown option `--%s`", name)
			case kind == boolFlag:
				if hasValue {
					return args{}, fmt.Errorf("option `--%s` takes no value", name)
				}
				a.bools[name] = true
			case kind == intFlag:
				if !hasValue {
					if i+1 >= len(words) {
						return args{}, fmt.Errorf("option `--%s` needs a number", name)
					}
					i++
					value = words[i]
				}
				n, err := strconv.Atoi(value)
				if err != nil || n < 1 {
					return args{}, fmt.Errorf("option `--%s` needs a whole number from 1, got `%s`", name, value)
				}
				a.ints[name] = n
			}
			continue
		}
		a.pos = append(a.pos, w)
	}
	return a, nil
}

// cutDashes returns w without a leading "--" (or an em/en dash a client
// made of it), when w is a flag.
func cutDashes(w string) (string, bool) {
	for _, prefix := range []string{"--", "—", "–"} {
		if rest, ok := strings.CutPrefix(w, prefix); ok && rest != "" && rest[0] != '-' {
			return rest, true
		}
	}
	return "", false
}

// text joins positional arguments from i into free text (a name, a
// reason), without the quotes that may surround it.
func (a args) text(from int) string {
	if from >= len(a.pos) {
		return ""
	}
	s := strings.Join(a.pos[from:], " ")
	for _, q := range []string{`"`, "'", "“”", "«»"} {
		open, closing := q, q
		if runes := []rune(q); len(runes) == 2 {
			open, closing = string(runes[0]), string(runes[1])
		}
		if len(s) >= len(open)+len(closing) && strings.HasPrefix(s, open) && strings.HasSuffix(s, closing) {
			return strings.TrimSpace(s[len(open) : len(s)-len(closing)])
		}
	}
	return s
}

// page is the --page value, 1 when not given.
func (a args) page() int {
	if n := a.ints["page"]; n > 0 {
		return n
	}
	return 1
}

// editDistance is the optimal string alignment distance between a and b
// over runes: insertions, deletions, substitutions and transpositions of
// two neighbours (the usual typos) each cost one.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	rows := [3][]int{make([]int, len(rb)+1), make([]int, len(rb)+1), make([]int, len(rb)+1)}
	for j := range rows[1] {
		rows[1][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		older, prev, cur := rows[0], rows[1], rows[2]
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], older[j-2]+1)
			}
		}
		rows[0], rows[1], rows[2] = prev, cur, older
	}
	return rows[1][len(rb)]
}

// closest returns the names most like input: those it is the start of
// (when it is at least two characters), else those at the smallest edit
// distance when that distance is small for input's length; nil when
// nothing is close.
func closest(input string, names []string) []string {
	input = strings.ToLower(input)
	if input == "" {
		return nil
	}
	var prefixed []string
	if len([]rune(input)) >= 2 {
		for _, name := range names {
			if strings.HasPrefix(name, input) {
				prefixed = append(prefixed, name)
			}
		}
	}
	if len(prefixed) > 0 {
		return prefixed
	}
	limit := max(2, len([]rune(input))/3)
	best := limit + 1
	var found []string
	for _, name := range names {
		switch d := editDistance(input, name); {
		case d < best:
			best, found = d, []string{name}
		case d == best:
			found = append(found, name)
		}
	}
	if best > limit {
		return nil
	}
	slices.Sort(found)
	return found
}
