package internalapi

import (
	"crypto/sha256"
	"crypto/subtle"
)

// serviceToken is a configured token, kept only as its SHA-256.
type serviceToken struct {
	hash    [sha256.Size]byte
	service *Service
}

func hashToken(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// tokenEqual compares two tokens in constant time. Both are hashed first so
// that neither the time nor the result depends on their lengths.
func tokenEqual(a, b string) bool {
	ha, hb := hashToken(a), hashToken(b)
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// findToken returns the index of the configured token equal to token, or
// -1. It compares against every token, without stopping at a match, so the
// time taken does not say which token (or whether any) matched. On
// duplicates the first wins (New rejects duplicates).
func findToken(token string, tokens []serviceToken) int {
	h := hashToken(token)
	found := -1
	for i := range tokens {
		eq := subtle.ConstantTimeCompare(h[:], tokens[i].hash[:])
		unset := subtle.ConstantTimeEq(int32(found), -1)
		found = subtle.ConstantTimeSelect(eq&unset, i, found)
	}
	return found
}
