package config

import "time"

// Encryption configures end-to-bridge encryption: the bot and the agents'
// ghosts get Matrix devices of their own, read encrypted rooms and post
// into them encrypted. It needs a homeserver that sends appservices
// to-device events, device lists and one-time-key counts (MSC2409/MSC4203,
// MSC3202) and lets them create devices (MSC4190): Synapse does, Dendrite
// does not (docs/homeservers.md).
type Encryption struct {
	// Enabled turns it on (it needs appservice.ephemeral_events, the
	// switch that makes Synapse send to-device events).
	Enabled bool `yaml:"enabled"`
	// PickleKey encrypts the Olm and Megolm state in the database (the
	// crypto_* tables). Required when enabled; never logged. Changing it
	// makes the stored state unreadable: the devices start over.
	PickleKey string `yaml:"pickle_key"`
	// DeviceName is the display name of the bridge's devices.
	DeviceName string `yaml:"device_name"`
	// GiveUpAfter is how long an event whose keys have not arrived keeps
	// being retried before it is delivered as messaging.message.undecryptable.
	GiveUpAfter Duration `yaml:"give_up_after"`
}

func defaultEncryption() Encryption {
	return Encryption{DeviceName: "DAARION bridge", GiveUpAfter: NewDuration("10m")}
}

// GiveUp is encryption.give_up_after (validated; empty is the default).
func (e Encryption) GiveUp() time.Duration {
	return orDefault(e.GiveUpAfter, defaultEncryption().GiveUpAfter)
}

func (e Encryption) validate(ephemeral bool, fail func(key, format string, args ...any)) {
	if v := e.GiveUpAfter; v.String() != "" && (!v.Valid() || v.Duration <= 0) {
		fail("encryption.give_up_after", "must be a positive duration such as 10m, got %q", v)
	}
	if len(e.DeviceName) > 100 {
		fail("encryption.device_name", "must be at most 100 bytes, got %d", len(e.DeviceName))
	}
	if !e.Enabled {
		return
	}
	if len(e.PickleKey) < 16 {
		fail("encryption.pickle_key", "must be set (at least 16 characters) when encryption.enabled is true")
	}
	if !ephemeral {
		fail("encryption.enabled", "needs appservice.ephemeral_events: true (the homeserver sends to-device events only then)")
	}
}
