package internalapi

import "crypto/rand"

// requestID returns the caller's X-Request-Id when it is 1-128 characters
// of [A-Za-z0-9._-], or a new random one.
func requestID(in string) string {
	if validRequestID(in) {
		return in
	}
	return rand.Text()
}

func validRequestID(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
