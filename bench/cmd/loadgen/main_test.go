package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// A 503 is a refusal, told apart from a failed probe and from a probe.
func TestProbeTellsRefusalsApart(t *testing.T) {
	for _, tc := range []struct {
		code          int
		body          string
		refused, fail bool
	}{
		{http.StatusServiceUnavailable, "too many probes in flight\n", true, true},
		{http.StatusOK, "x 1\nprobe_success 0\n", false, true},
		{http.StatusOK, "x 1\nprobe_success 1\n", false, false},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(tc.code)
			_, _ = w.Write([]byte(tc.body))
		}))
		err := probe(srv.Client(), srv.URL, "10")
		srv.Close()
		if errors.Is(err, errRefused) != tc.refused || (err != nil) != tc.fail {
			t.Errorf("%d %q: err = %v", tc.code, tc.body, err)
		}
	}
}
