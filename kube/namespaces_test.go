package kube

import (
	"strings"
	"testing"
)

func TestNamespaces(t *testing.T) {
	if err := (Namespaces{}).Check("anything"); err != nil {
		t.Errorf("empty list refused a namespace: %v", err)
	}
	n := Namespaces{"calico-system", "traefik"}
	if err := n.Check("traefik"); err != nil {
		t.Errorf("listed namespace refused: %v", err)
	}
	if err := n.Check("kube-system"); err == nil || !strings.Contains(err.Error(), `namespace "kube-system" is not allowed`) {
		t.Errorf("unlisted namespace: %v", err)
	}
	if err := (Namespaces{"Bad_NS"}).Validate(); err == nil || !strings.Contains(err.Error(), "namespaces:") {
		t.Errorf("invalid name accepted: %v", err)
	}
}
