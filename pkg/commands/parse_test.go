package commands

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	flags := map[string]flagKind{"page": intFlag, "archived": boolFlag}
	for _, tc := range []struct {
		words   string
		pos     []string
		bools   map[string]bool
		ints    map[string]int
		wantErr string
	}{
		{words: "", pos: nil},
		{words: "kyiv", pos: []string{"kyiv"}},
		{words: "kyiv --archived", pos: []string{"kyiv"}, bools: map[string]bool{"archived": true}},
		{words: "--page 3 kyiv", pos: []string{"kyiv"}, ints: map[string]int{"page": 3}},
		{words: "--page=2", ints: map[string]int{"page": 2}},
		{words: "—page 2 —archived", ints: map[string]int{"page": 2}, bools: map[string]bool{"archived": true}},
		{words: "--PAGE 4", ints: map[string]int{"page": 4}},
		{words: "a -- --page", pos: []string{"a", "--page"}},
		{words: "-x", pos: []string{"-x"}},
		{words: "--page", wantErr: "needs a number"},
		{words: "--page two", wantErr: "whole number"},
		{words: "--page 0", wantErr: "whole number"},
		{words: "--archived=yes", wantErr: "takes no value"},
		{words: "--force", wantErr: "unknown option `--force`"},
	} {
		t.Run(tc.words, func(t *testing.T) {
			a, err := parseArgs(strings.Fields(tc.words), flags)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.bools == nil {
				tc.bools = map[string]bool{}
			}
			if tc.ints == nil {
				tc.ints = map[string]int{}
			}
			if !reflect.DeepEqual(a.pos, tc.pos) || !reflect.DeepEqual(a.bools, tc.bools) || !reflect.DeepEqual(a.ints, tc.ints) {
				t.Errorf("got %v %v %v, want %v %v %v", a.pos, a.bools, a.ints, tc.pos, tc.bools, tc.ints)
			}
		})
	}
}

func TestArgsTextAndPage(t *testing.T) {
	for _, tc := range []struct {
		words string
		from  int
		want  string
	}{
		{"kyiv Kyiv City", 1, "Kyiv City"},
		{`kyiv "Kyiv City"`, 1, "Kyiv City"},
		{"kyiv “Kyiv City”", 1, "Kyiv City"},
		{"kyiv «Kyiv»", 1, "Kyiv"},
		{`kyiv "`, 1, `"`},
		{"kyiv", 1, ""},
		{"a b c", 0, "a b c"},
	} {
		a, _ := parseArgs(strings.Fields(tc.words), nil)
		if got := a.text(tc.from); got != tc.want {
			t.Errorf("text(%d) of %q = %q, want %q", tc.from, tc.words, got, tc.want)
		}
	}
	if a, _ := parseArgs(nil, nil); a.page() != 1 {
		t.Errorf("default page = %d", a.page())
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "abc", 3}, {"status", "status", 0},
		{"stauts", "status", 1}, {"kitten", "sitting", 3}, {"pign", "ping", 1}, {"ping", "pong", 1},
		{"київ", "києв", 1}, {"ca", "abc", 3}, {"romo", "room", 1}, {"romo", "rooms", 2}, {"hlep", "help", 1},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := editDistance(tc.b, tc.a); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d (not symmetric)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestClosest(t *testing.T) {
	names := (&Bot{}).commandList()
	all := make([]string, len(names))
	for i, c := range names {
		all[i] = c.name
	}
	for _, tc := range []struct {
		input string
		want  []string
	}{
		{"stauts", []string{"status"}},
		{"STATSU", []string{"status"}},
		{"hlep", []string{"help"}},
		{"pnig", []string{"ping"}},
		{"romo", []string{"room"}},
		{"roms", []string{"rooms"}},
		{"romos", []string{"rooms"}},
		{"agnet", []string{"agent"}},
		{"subscription", []string{"subscriptions"}},
		{"sub", []string{"subscriptions"}},
		{"re", []string{"redeliver", "resume", "reconcile", "retry-parked"}},
		{"archiv", []string{"archive"}},
		{"unarchiv", []string{"unarchive"}},
		{"create", []string{"create-room"}},
		{"createroom", []string{"create-room"}},
		{"set-agent", []string{"set-agent-name"}},
		{"failrues", []string{"failures"}},
		{"redelivr", []string{"redeliver"}},
		{"paus", []string{"pause"}},
		{"resme", []string{"resume"}},
		{"xyzzy", nil},
		{"deploy-everything", nil},
		{"", nil},
		{"s", nil},
	} {
		t.Run(tc.input, func(t *testing.T) {
			if got := closest(tc.input, all); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("closest(%q) = %v, want %v", tc.input, got, tc.want)
			}
		})
	}
}

func TestUnknownReply(t *testing.T) {
	names := []string{"help", "ping", "status"}
	if got := unknownReply("stauts", names, "!daarion "); !strings.Contains(got, "Did you mean** `!daarion status`?") {
		t.Errorf("reply = %q", got)
	}
	if got := unknownReply("stauts", names, ""); !strings.Contains(got, "`status`?") || strings.Contains(got, "!daarion") {
		t.Errorf("direct chat reply = %q", got)
	}
	if got := unknownReply("xyzzy", names, ""); !strings.Contains(got, "Send `help`") {
		t.Errorf("no match reply = %q", got)
	}
}

func TestHasPrefix(t *testing.T) {
	for text, want := range map[string]bool{
		"!daarion status":   true,
		"!daarion":          true,
		"  !DAARION status": true,
		"!daarion\nstatus":  true,
		"!daarionstatus":    false,
		"status":            false,
		"hello !daarion":    false,
		"!daar":             false,
		"":                  false,
	} {
		if got := hasPrefix(text); got != want {
			t.Errorf("hasPrefix(%q) = %v, want %v", text, got, want)
		}
	}
}

func TestPaged(t *testing.T) {
	var lines []string
	for i := range 45 {
		lines = append(lines, strings.Repeat("x", i+1))
	}
	first, err := paged("**Things:** 45", lines, 1, "things")
	if err != nil || !strings.Contains(first, "page 1 of 3") || strings.Count(first, "\n- ") != 20 || !strings.Contains(first, "`things --page 2`") {
		t.Errorf("first page (%v):\n%s", err, first)
	}
	last, err := paged("**Things:** 45", lines, 3, "things")
	if err != nil || strings.Count(last, "\n- ") != 5 || strings.Contains(last, "Next page") {
		t.Errorf("last page (%v):\n%s", err, last)
	}
	if _, err = paged("**Things:** 45", lines, 4, "things"); err == nil {
		t.Error("page 4 of 3 gave no error")
	}
	one, _ := paged("**Things:** 2", lines[:2], 1, "things")
	if strings.Contains(one, "page") {
		t.Errorf("a single page mentions pages:\n%s", one)
	}
}

func TestRenderNoticeAlwaysHasHTML(t *testing.T) {
	for _, md := range []string{"pong", "**Pong!**", "a\nb", "<script>x</script>"} {
		c := renderNotice(md)
		if c.MsgType != "m.notice" || c.Format != "org.matrix.custom.html" || c.FormattedBody == "" || c.Body == "" {
			t.Errorf("%q rendered as %+v", md, c)
		}
		if strings.Contains(c.FormattedBody, "<script>") {
			t.Errorf("%q: HTML was not escaped: %s", md, c.FormattedBody)
		}
	}
}

func TestTxnIDIsStablePerEvent(t *testing.T) {
	a, b := txnID("reply", "$one"), txnID("reply", "$one")
	if a != b || a == txnID("reply", "$two") || a == txnID("invite", "$one") {
		t.Errorf("txn ids: %s %s %s", a, b, txnID("reply", "$two"))
	}
	if strings.ContainsAny(a, "$/+= ") {
		t.Errorf("txn id %q is not URL-safe", a)
	}
}
