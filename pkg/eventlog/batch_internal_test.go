package eventlog

import "testing"

func TestCommitRows(t *testing.T) {
	handed := func(n int) journalRow { return journalRow{handed: &handedOff{events: make([]IncomingEvent, n)}} }
	readBack := journalRow{hasBody: true}
	cases := []struct {
		name string
		rows []journalRow
		want int
	}{
		{"one row", []journalRow{handed(100)}, 1},
		{"full transactions: 20 of 100 events", repeat(handed(100), 64), 20},
		{"1-event transactions: all 64", repeat(handed(1), 64), 64},
		{"a row past the bound alone still goes", []journalRow{handed(5000), handed(1)}, 1},
		{"read back rows count one each", repeat(readBack, 64), 64},
		{"an empty transaction counts one", repeat(handed(0), 3), 3},
	}
	for _, tc := range cases {
		if got := commitRows(tc.rows); got != tc.want {
			t.Errorf("%s: %d rows, want %d", tc.name, got, tc.want)
		}
	}
}

func repeat(row journalRow, n int) []journalRow {
	rows := make([]journalRow, n)
	for i := range rows {
		rows[i] = row
	}
	return rows
}
