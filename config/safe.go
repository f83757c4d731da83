package config

import "sync"

// SafeConfig holds the running config; a failed reload keeps the old one.
type SafeConfig struct {
	mu  sync.RWMutex
	cfg *Config
}

// NewSafeConfig wraps an already-loaded config.
func NewSafeConfig(c *Config) *SafeConfig { return &SafeConfig{cfg: c} }

// Get returns the running config. Callers must not modify it.
func (s *SafeConfig) Get() *Config {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cfg
}

// Reload loads path and swaps it in only if it is valid.
func (s *SafeConfig) Reload(path string) error {
	c, err := Load(path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cfg = c
	s.mu.Unlock()
	return nil
}
