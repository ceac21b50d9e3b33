// Package status is the one picture of how the bridge is doing: reachability
// of its parts, how far behind the log's consumers are, who leads, what is
// parked and queued. Every process samples it once a second (pkg/bridge);
// /healthz, the metrics and the bot's status command all read the latest
// sample instead of asking the database and the homeserver each on their own.
package status

import "time"

// Snapshot is one sample.
type Snapshot struct {
	// At is when the sample was taken; zero before the first one.
	At time.Time

	Database   Reachability
	Homeserver Reachability

	// LogHead is the newest event's position; JournalBacklog the answered
	// transactions not yet split into the log.
	LogHead        int64
	JournalBacklog int64
	// Consumers are the log's consumers, by their durable cursors.
	Consumers []Consumer
	// MaxLag is the largest consumer lag.
	MaxLag int64

	// LeaderHeld says some process holds the leader lease; Leading that it
	// is this one.
	LeaderHeld bool
	Leading    bool

	// ParkedEvents counts parked events by consumer; ParkedTransactions the
	// journalled transactions the indexer set aside.
	ParkedEvents       map[string]int64
	ParkedTransactions int64

	// WebhooksPending and WebhooksDead count webhook deliveries waiting and
	// in the dead-letter lists, each up to webhook.TotalsCap.
	WebhooksPending int64
	WebhooksDead    int64

	// Encryption is the end-to-bridge encryption's state.
	Encryption Encryption
}

// Encryption is the end-to-bridge encryption's part of a sample.
type Encryption struct {
	// Enabled: encryption.enabled. Unavailable, when set, is why it cannot
	// work (the homeserver lacks what it needs); the rest keeps working.
	Enabled     bool
	Unavailable string
	// Devices are the devices this process has loaded (the leader's only);
	// Waiting the encrypted events waiting for their keys.
	Devices int
	Waiting int64
}

// Reachability is the result of one ping.
type Reachability struct {
	Reachable bool
	Ping      time.Duration
	// Error is why it was not reachable ("" when it was).
	Error string
}

// Consumer is one consumer of the log.
type Consumer struct {
	Name     string
	Position int64
	Lag      int64
}

// Sampled reports whether the snapshot holds a sample.
func (s *Snapshot) Sampled() bool { return s != nil && !s.At.IsZero() }

// Leader says who leads, as /healthz reports it.
func (s *Snapshot) Leader() string {
	switch {
	case !s.Sampled():
		return "unknown"
	case s.Leading:
		return "this process"
	case s.LeaderHeld:
		return "another process"
	default:
		return "none"
	}
}

// Thresholds are the health thresholds (0: no threshold).
type Thresholds struct {
	MaxJournalBacklog int64
	MaxConsumerLag    int64
}

// Degradation lists why health is degraded (none when it is not): no
// process leads, or the journal backlog or a consumer's lag is past its
// threshold. Nothing before the first sample.
func (s *Snapshot) Degradation(t Thresholds) []string {
	if !s.Sampled() {
		return nil
	}
	var why []string
	if !s.LeaderHeld {
		why = append(why, "no process leads")
	}
	if t.MaxJournalBacklog > 0 && s.JournalBacklog >= t.MaxJournalBacklog {
		why = append(why, "journal backlog")
	}
	if t.MaxConsumerLag > 0 && s.MaxLag >= t.MaxConsumerLag {
		why = append(why, "consumer lag")
	}
	return why
}
