package webhook

import "testing"

// The Standard Webhooks known-answer vector, from the specification's own
// libraries: TestWebhookSign in libraries/go/webhook_test.go of
// github.com/standard-webhooks/standard-webhooks (the JavaScript, Python,
// PHP, Ruby, C# and Java tests use the same one).
const (
	swSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	swMsgID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	swTimestamp = int64(1614265330)
	swBody      = `{"test": 2432232314}`
	swSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

// Sign gives the published signature, with or without the secret's
// "whsec_" prefix (the libraries accept both: TestWebhookPrefix).
func TestSignKnownAnswer(t *testing.T) {
	for _, tc := range []struct{ name, secret string }{
		{"published vector", swSecret},
		{"secret without the whsec_ prefix", swSecret[len(secretPrefix):]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig, err := Sign(tc.secret, swMsgID, swTimestamp, []byte(swBody))
			if err != nil {
				t.Fatal(err)
			}
			if sig != swSignature {
				t.Errorf("signature %s, want %s", sig, swSignature)
			}
		})
	}
}

// Verify accepts the published signature, alone or among others, and
// refuses the libraries' invalid signatures and the published signature
// for any other message.
func TestVerifyKnownAnswer(t *testing.T) {
	for _, tc := range []struct {
		name, secret, msgID string
		timestamp           int64
		body, header        string
		valid               bool
	}{
		{"published vector", swSecret, swMsgID, swTimestamp, swBody, swSignature, true},
		// Go "valid multi sig is valid": the valid one among invalid ones.
		{"among other signatures", swSecret, swMsgID, swTimestamp, swBody,
			"v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " +
				swSignature + " v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", true},
		// Go "invalid signature is invalid".
		{"another signature", swSecret, swMsgID, swTimestamp, swBody, "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=", false},
		// Go "partial signature is invalid".
		{"partial signature", swSecret, swMsgID, swTimestamp, swBody, "v1,", false},
		// Java withWrongVersion.
		{"wrong version", swSecret, swMsgID, swTimestamp, swBody, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", false},
		// Java withInvalidSignatureFormat.
		{"no version", swSecret, swMsgID, swTimestamp, swBody, "invalid_signature", false},
		{"no version prefix on the right value", swSecret, swMsgID, swTimestamp, swBody, swSignature[len("v1,"):], false},
		// Python test_invalid_signature_raises_error's value: the last character changed.
		{"one character changed", swSecret, swMsgID, swTimestamp, swBody, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=", false},
		{"no signature", swSecret, swMsgID, swTimestamp, swBody, "", false},
		// The published signature does not fit any other message.
		{"other timestamp", swSecret, swMsgID, swTimestamp + 1, swBody, swSignature, false},
		{"other id", swSecret, "msg_p5jXN8AQM9LWM0D4loKWxJeK", swTimestamp, swBody, swSignature, false},
		{"other body", swSecret, swMsgID, swTimestamp, `{"test": 2432232315}`, swSignature, false},
		{"other secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSv", swMsgID, swTimestamp, swBody, swSignature, false},
		{"secret that is not base64", "whsec_not base64!", swMsgID, swTimestamp, swBody, swSignature, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Verify(tc.secret, tc.msgID, tc.timestamp, []byte(tc.body), tc.header); got != tc.valid {
				t.Errorf("Verify(%q) = %v, want %v", tc.header, got, tc.valid)
			}
		})
	}
}
