// Package e2e runs greybox as users do: the built binary, driven by
// signals and flags, scraped by a real Prometheus. It has tests only.
package e2e
