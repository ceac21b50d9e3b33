package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

var (
	openapiOnce   sync.Once
	openapiRouter routers.Router
	openapiErr    error
)

// loadOpenAPI reads docs/openapi.yaml once; every internal API answer in the
// e2e tests is checked against it.
func loadOpenAPI() (routers.Router, error) {
	openapiOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile("../docs/openapi.yaml")
		if err != nil {
			openapiErr = err
			return
		}
		if err = doc.Validate(context.Background()); err != nil {
			openapiErr = err
			return
		}
		// Match on paths only: the test listeners have their own ports.
		doc.Servers = nil
		openapiRouter, openapiErr = gorillamux.NewRouter(doc)
	})
	return openapiRouter, openapiErr
}

// checkOpenAPI fails the test when a real answer is not what docs/openapi.yaml
// documents for that operation and status.
func checkOpenAPI(t *testing.T, req *http.Request, status int, header http.Header, body []byte) {
	t.Helper()
	router, err := loadOpenAPI()
	if err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		t.Errorf("OpenAPI: %s %s is not documented: %v", req.Method, req.URL.Path, err)
		return
	}
	input := &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
	}
	err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: input,
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	})
	if err != nil {
		t.Errorf("OpenAPI: %s %s answered %d %s, which docs/openapi.yaml does not allow: %v", req.Method, req.URL.Path, status, body, err)
	}
}

type apiResult struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func (r apiResult) str(key string) string {
	v, _ := r.json[key].(string)
	return v
}

// apiRaw calls the internal API with a raw body and content type.
func (s *stack) apiRaw(t *testing.T, method, path, token, contentType string, body []byte) apiResult {
	t.Helper()
	req, err := http.NewRequest(method, s.apiURL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Internal-Service-Token", token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	res := apiResult{status: resp.StatusCode, header: resp.Header, body: data}
	if err = json.Unmarshal(data, &res.json); err != nil {
		t.Errorf("%s %s answered %d with a body that is not a JSON object: %q", method, path, resp.StatusCode, data)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	checkOpenAPI(t, req, resp.StatusCode, resp.Header, data)
	return res
}

// api calls the internal API with the service secret and a JSON body.
func (s *stack) api(t *testing.T, method, path string, body any) apiResult {
	t.Helper()
	return s.apiAs(t, serviceSecret, method, path, body)
}

func (s *stack) apiAs(t *testing.T, token, method, path string, body any) apiResult {
	t.Helper()
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	return s.apiRaw(t, method, path, token, "application/json", data)
}
