package logging

import (
	"bytes"
	"strings"
	"testing"
)

func TestRequestBodiesAreNotLogged(t *testing.T) {
	for _, format := range []string{"json", "pretty"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := New("debug", format, &buf)
			if err != nil {
				t.Fatal(err)
			}
			body := []byte(`{"msgtype":"m.text","body":"SECRET \"req_body\": x","nested":{"req_body":"SECRET"}}`)
			log.Debug().Str("method", "PUT").RawJSON("req_body", body).Int("status_code", 200).Msg("Request completed")
			log.Debug().Str("req_body", "SECRET text").Msg("Request completed")
			log.Info().Str("body", `a "req_body": in a message`).Msg("other")
			out := buf.String()
			if strings.Contains(out, "SECRET") {
				t.Errorf("a request body was logged:\n%s", out)
			}
			for _, want := range []string{"<omitted: ", "200", "PUT", "Request completed", `req_body\": in a message`} {
				if !strings.Contains(out, want) {
					t.Errorf("the log lost %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestRedactBodies(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"a":1,"req_body":{"x":"y"},"b":2}` + "\n", `{"a":1,"req_body":"<omitted: 9 bytes>","b":2}` + "\n"},
		{`{"req_body":"s","req_body":[1]}`, `{"req_body":"<omitted: 3 bytes>","req_body":"<omitted: 3 bytes>"}`},
		{`{"req_body":{"broken"`, `{"req_body":"<omitted>"}` + "\n"},
		{`{"body":"no key"}`, `{"body":"no key"}`},
	} {
		if got := string(redactBodies([]byte(tc.in))); got != tc.want {
			t.Errorf("redactBodies(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
