package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// E2EE are the end-to-bridge encryption's metric families, registered when
// encryption is on (Metrics.E2EE).
type E2EE struct {
	Decryptions    *prometheus.CounterVec
	DecryptSeconds prometheus.Histogram
}

// E2EE registers the encryption families and returns their observer.
func (m *Metrics) E2EE() *E2EE {
	e := &E2EE{
		Decryptions: counterVec("e2ee_decryptions_total",
			"Encrypted room events by outcome: decrypted (at once), waiting (no keys yet), retried (decrypted when keys came), key_requested (the sender's devices were asked for a missing key), failed (cannot be decrypted), gave_up (keys never came within encryption.give_up_after).", "outcome"),
		DecryptSeconds: histogram("e2ee_decrypt_seconds", "Time to decrypt an encrypted room event and journal its clear form.",
			prometheus.ExponentialBuckets(0.0002, 2.5, 12)),
	}
	m.Registry.MustRegister(e.Decryptions, e.DecryptSeconds)
	return e
}

// ObserveDecrypt records one decryption outcome.
func (e *E2EE) ObserveDecrypt(outcome string, d time.Duration) {
	e.Decryptions.WithLabelValues(outcome).Inc()
	if outcome == "decrypted" || outcome == "retried" {
		e.DecryptSeconds.Observe(d.Seconds())
	}
}
