package config

import "time"

// Retention says how long the bridge keeps what it no longer needs, so that
// no table grows for ever. Durations such as 168h; "0" keeps for ever.
type Retention struct {
	// Events: an event is deleted from the log this long after it was
	// received, once every consumer has passed it. A sync since older than
	// what is kept is answered 400 (start again without since).
	Events Duration `yaml:"events"`
	// Transactions: the record of a transaction id (retries, counts).
	Transactions Duration `yaml:"transactions"`
	// Sent: the record of an event the bridge sent, and a completed
	// Idempotency-Key (a retry after this long sends again).
	Sent Duration `yaml:"sent"`
	// DeadLetters: a webhook dead letter not redelivered.
	DeadLetters Duration `yaml:"dead_letters"`
	// Interval: how often the leader prunes.
	Interval Duration `yaml:"interval"`
}

func defaultRetention() Retention {
	return Retention{Events: NewDuration("168h"), Transactions: NewDuration("168h"), Sent: NewDuration("720h"),
		DeadLetters: NewDuration("720h"), Interval: NewDuration("10m")}
}

// Durations of the retention keys (validated; empty is the default); 0
// keeps for ever.
func (r Retention) EventsFor() time.Duration { return orDefault(r.Events, defaultRetention().Events) }
func (r Retention) TransactionsFor() time.Duration {
	return orDefault(r.Transactions, defaultRetention().Transactions)
}
func (r Retention) SentFor() time.Duration { return orDefault(r.Sent, defaultRetention().Sent) }
func (r Retention) DeadLettersFor() time.Duration {
	return orDefault(r.DeadLetters, defaultRetention().DeadLetters)
}
func (r Retention) Every() time.Duration { return orDefault(r.Interval, defaultRetention().Interval) }

func orDefault(d, def Duration) time.Duration {
	if d.String() == "" {
		return def.Duration
	}
	return d.Duration
}

func (r Retention) validate(fail func(key, format string, args ...any)) {
	for _, k := range []struct {
		key   string
		value Duration
	}{
		{"retention.events", r.Events}, {"retention.transactions", r.Transactions},
		{"retention.sent", r.Sent}, {"retention.dead_letters", r.DeadLetters},
	} {
		if k.value.String() == "" {
			continue
		}
		if !k.value.Valid() || k.value.Duration < 0 {
			fail(k.key, "must be a duration such as 168h (0 keeps for ever), got %q", k.value)
		}
	}
	if d := r.Interval; d.String() != "" && (!d.Valid() || d.Duration < time.Second) {
		fail("retention.interval", "must be a duration of at least 1s such as 10m, got %q", r.Interval)
	}
}
