package prober

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/model"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/kube"
)

// TraefikParitySettings is the `traefik_parity:` section of a module.
type TraefikParitySettings struct {
	HTTPClientConfig config.HTTPClientConfig `yaml:"http_client_config,omitempty"`
	// PerPage is sent as per_page on every list request.
	PerPage int `yaml:"per_page"`
	// MaxPages caps the pages read per list; a replica with more is down
	// (its table could not be compared whole).
	MaxPages int `yaml:"max_pages"`
	// MaxResponseBytes caps each response body.
	MaxResponseBytes config.Bytes  `yaml:"max_response_bytes"`
	IncludeTCP       bool          `yaml:"include_tcp"`
	IncludeUDP       bool          `yaml:"include_udp"`
	IgnoreRouters    config.Regexp `yaml:"ignore_routers,omitempty"`
	// Compare lists what must agree besides the router name: rule, service.
	Compare []string `yaml:"compare,omitempty"`
	// GracePeriod: pods (Kubernetes discovery) whose Traefik started less
	// than this ago are reported but left out of the consensus and success.
	GracePeriod model.Duration `yaml:"grace_period,omitempty"`
	// Namespaces a k8s: target may name; empty allows any.
	Namespaces kube.Namespaces `yaml:"namespaces,omitempty"`
	// Scheme for replicas found by k8s: and dns: discovery (http or https).
	Scheme string `yaml:"scheme,omitempty"`

	compareRule, compareService bool
}

const (
	// Traefik's own default is 100; 1,000 reads a 20,000-router table in
	// 20 requests instead of 200, and a page of 1,000 routers stays well
	// under max_response_bytes.
	defaultParityPerPage  = 1000
	defaultParityMaxPages = 200
	defaultParityMaxBytes = 8 << 20
	// parityConcurrency bounds replicas fetched at once.
	parityConcurrency = 32
	// parityLogNames caps the router names logged per list.
	parityLogNames = 50
)

// HTTPClient is the module's client config, for the handler's target check.
func (s *TraefikParitySettings) HTTPClient() *config.HTTPClientConfig { return &s.HTTPClientConfig }

func (s *TraefikParitySettings) Validate() error {
	if s.PerPage < 0 || s.MaxPages < 0 {
		return errors.New("per_page and max_pages must be positive")
	}
	if s.PerPage == 0 {
		s.PerPage = defaultParityPerPage
	}
	if s.MaxPages == 0 {
		s.MaxPages = defaultParityMaxPages
	}
	if s.MaxResponseBytes == 0 {
		s.MaxResponseBytes = defaultParityMaxBytes
	}
	if s.GracePeriod < 0 {
		return errors.New("grace_period must not be negative")
	}
	switch s.Scheme {
	case "":
		s.Scheme = "http"
	case "http", "https":
	default:
		return fmt.Errorf("scheme: %q is neither http nor https", s.Scheme)
	}
	s.compareRule, s.compareService = false, false
	for _, c := range s.Compare {
		switch c {
		case "name":
		case "rule":
			s.compareRule = true
		case "service":
			s.compareService = true
		default:
			return fmt.Errorf("compare: unknown field %q (names are always compared; add rule and/or service)", c)
		}
	}
	if err := s.Namespaces.Validate(); err != nil {
		return err
	}
	return s.HTTPClientConfig.Validate()
}

func init() {
	Register("traefik_parity", Spec{
		Settings: func() config.Settings {
			return &TraefikParitySettings{
				HTTPClientConfig: config.NewHTTPClientConfig(false),
				PerPage:          defaultParityPerPage,
				MaxPages:         defaultParityMaxPages,
				MaxResponseBytes: defaultParityMaxBytes,
			}
		},
		Probe:       ProbeTraefikParity,
		CheckTarget: checkTraefikParityTarget,
	})
}

// paritySet is a parsed target: which replicas to compare, found by
// discovery (k8s:, dns:) or listed as base URLs.
type paritySet struct {
	kind        string // "k8s", "dns" or "static"
	*replicaSet        // nil for a static list
	urls        []*url.URL
}

const parityTargetForms = "want " + replicaSetForms + " " +
	"or a comma-separated list of base URLs (http://a:9000,http://b:9000)"

func parseParitySet(target string) (*paritySet, error) {
	// Every message shows the target without userinfo: a password typed
	// into a URL must not reach a log, an error page or the history.
	target = Redact(target)
	rs, err := parseReplicaSet("target", target, parityTargetForms)
	if err != nil {
		return nil, err
	}
	if rs != nil {
		return &paritySet{kind: rs.kind, replicaSet: rs}, nil
	}
	set := &paritySet{kind: "static"}
	seen := map[string]bool{}
	for part := range strings.SplitSeq(target, ",") {
		part = strings.TrimSpace(part)
		u, err := url.Parse(part)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
			return nil, fmt.Errorf("target %q: %q is not an http(s) base URL (%s)", target, part, parityTargetForms)
		}
		if u.User != nil {
			return nil, fmt.Errorf("target %q: credentials in the URL are not allowed; use http_client_config", target)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("target %q: base URL %q must not have a query or fragment", target, part)
		}
		if u.Port() != "" {
			if _, err := parsePort(u.Port()); err != nil {
				return nil, fmt.Errorf("target %q: %w", target, err)
			}
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		if seen[u.String()] {
			return nil, fmt.Errorf("target %q: %s listed twice", target, u)
		}
		seen[u.String()] = true
		set.urls = append(set.urls, u)
	}
	return set, nil
}

func checkTraefikParityTarget(ctx context.Context, target string, m config.Module, g *Guard) error {
	set, err := parseParitySet(target)
	if err != nil {
		return &TargetError{Reason: err.Error()}
	}
	s, _ := m.Settings.(*TraefikParitySettings)
	switch set.kind {
	case "k8s":
		// Pod IPs are checked as each replica is dialled.
		if s != nil {
			if err := s.Namespaces.Check(set.namespace); err != nil {
				return &TargetError{Forbidden: true, Reason: err.Error()}
			}
		}
	case "dns":
		if !m.AllowedTargets.Empty() {
			_, err := g.Resolve(ctx, set.host)
			return forbiddenOnly(err)
		}
	case "static":
		if m.AllowedTargets.Empty() {
			return nil
		}
		proxy := settingsProxy(m)
		for _, u := range set.urls {
			if err := forbiddenOnly(g.Destination(ctx, &http.Request{Method: http.MethodGet, URL: u, Host: u.Host}, proxy)); err != nil {
				return err
			}
		}
	}
	return nil
}

// parityReplica is one Traefik instance and what was read from it.
type parityReplica struct {
	label          string // the replica label: address or base URL
	namespace, pod string
	base           *url.URL
	inGrace        bool
	lease          *Lease // the page buffer's share of the body budget
	age            time.Duration

	err       error
	version   string
	ids       []uint32 // compared identities (parityKeys ids), sorted
	providers map[string]int
	broken    int
	dropped   int
	pages     int

	missing, extra []string // names, sorted
}

// parityRouter is the part of Traefik's router object the comparison uses.
// Name, Rule and Service point into the page being scanned (or a decoded
// copy when escaped): a replica's 20,000 names are not worth 20,000 strings
// when all but the first replica's are already interned.
type parityRouter struct {
	Name, Service, Rule []byte
	Provider            string
	Broken              bool // status "disabled" or a non-empty error list
}

// ProbeTraefikParity reads the full router table of every replica of a
// Traefik deployment and reports replicas that differ from the majority:
// the replica that came up without its Ingress routers answers 404 for a
// share of requests while its own metrics look healthy.
func ProbeTraefikParity(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
	s := module.Settings.(*TraefikParitySettings)
	set, err := parseParitySet(target)
	if err != nil {
		logger.Error("bad target", "err", err)
		return false
	}
	guard := env.Guard

	// Leave a little of the budget for comparing and answering: a replica
	// that never answers must not make the whole probe miss the scrape.
	fetchCtx := ctx
	if dl, ok := ctx.Deadline(); ok {
		margin := min(time.Until(dl)/10, 250*time.Millisecond)
		var cancel context.CancelFunc
		fetchCtx, cancel = context.WithDeadline(ctx, dl.Add(-margin))
		defer cancel()
	}

	replicas, ok := discoverParityReplicas(fetchCtx, set, s, env, guard, reg, logger)
	if !ok {
		return false
	}

	// Unlike the other probers this one reuses connections: it reads up to
	// max_pages pages per replica and measures a table, not a first visit.
	client, err := NewHTTPClient(fetchCtx, s.HTTPClientConfig, env, "traefik_parity", true)
	if err != nil {
		logger.Error("http_client_config", "err", err)
		return false
	}
	defer client.CloseIdleConnections()

	keys := newParityKeys()
	var wg sync.WaitGroup
	sem := make(chan struct{}, parityConcurrency)
	for _, r := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-fetchCtx.Done():
				r.err = fmt.Errorf("not started before the deadline: %w", fetchCtx.Err())
				return
			}
			r.lease = env.Bodies.Lease()
			defer r.lease.Release()
			r.err = fetchParityReplica(fetchCtx, client, s, keys, r)
		}()
	}
	wg.Wait()

	return compareParity(replicas, s, keys, reg, logger)
}

// discoverParityReplicas turns the target into replicas. Addresses DNS
// discovery resolved through the guard are approved by it for dialling.
func discoverParityReplicas(ctx context.Context, set *paritySet, s *TraefikParitySettings, env Env, guard *Guard, reg *Metrics, logger *slog.Logger) ([]*parityReplica, bool) {
	var replicas []*parityReplica
	if set.replicaSet == nil {
		for _, u := range set.urls {
			replicas = append(replicas, &parityReplica{label: u.String(), base: u})
		}
		return replicas, true
	}
	env.Guard = guard
	found, skipped, ok := discoverReplicas(ctx, set.replicaSet, env, logger)
	if !ok {
		return nil, false
	}
	now := time.Now()
	for _, f := range found {
		r := &parityReplica{label: f.addr, namespace: f.namespace, pod: f.pod, base: &url.URL{Scheme: s.Scheme, Host: f.addr}}
		if f.pod != "" {
			r.age = now.Sub(f.started)
			r.inGrace = s.GracePeriod > 0 && r.age < time.Duration(s.GracePeriod)
		}
		replicas = append(replicas, r)
	}
	if set.replicaSet.kind == "k8s" {
		g := newGauge("probe_traefik_pods_skipped", "Pods matched by the selector but not probed (not running, terminating, without an IP yet or without the named port).")
		reg.MustRegister(g)
		g.Set(float64(skipped))
	}
	return replicas, true
}

func fetchParityReplica(ctx context.Context, client *http.Client, s *TraefikParitySettings, keys *parityKeys, r *parityReplica) error {
	var v struct {
		Version string `json:"Version"`
	}
	if err := parityGet(ctx, client, s, r.base, "/api/version", nil, func(body io.Reader) error {
		return json.NewDecoder(body).Decode(&v)
	}); err != nil {
		return err
	}
	r.version = v.Version
	if r.version == "" {
		r.version = "unknown"
	}
	r.providers = map[string]int{}
	kinds := []string{"http"}
	if s.IncludeTCP {
		kinds = append(kinds, "tcp")
	}
	if s.IncludeUDP {
		kinds = append(kinds, "udp")
	}
	for _, kind := range kinds {
		if err := fetchParityList(ctx, client, s, keys, r, kind); err != nil {
			return err
		}
	}
	slices.Sort(r.ids)
	r.ids = slices.Compact(r.ids)
	return nil
}

// fetchParityList reads every page of /api/<kind>/routers, following
// X-Next-Page exactly as Traefik sends it: the next page number, and 1 on
// the last page.
func fetchParityList(ctx context.Context, client *http.Client, s *TraefikParitySettings, keys *parityKeys, r *parityReplica, kind string) error {
	path := "/api/" + kind + "/routers"
	prefix := ""
	if kind != "http" {
		prefix = kind + "/"
	}
	body, err := parityPage(r.lease)
	if err != nil {
		return err
	}
	defer parityPages.Put(&body)
	var key []byte
	sc := parityScanner{intern: map[string]string{}, rule: s.compareRule, service: s.compareService}
	for page := 1; ; {
		if page > s.MaxPages {
			return fmt.Errorf("%s: more than max_pages (%d) pages of %d routers; raise per_page or max_pages", path, s.MaxPages, s.PerPage)
		}
		q := url.Values{"page": {strconv.Itoa(page)}, "per_page": {strconv.Itoa(s.PerPage)}}
		var next string
		err := parityGet(ctx, client, s, r.base, path, q, func(rd io.Reader) error {
			var err error
			body, err = readInto(body[:0], rd, r.lease)
			if err != nil {
				return err
			}
			seen, mine := keys.pages.claim(ctx, kind, body)
			if seen != nil && !mine {
				seen.addTo(r)
				return nil
			}
			pg := seen // mine to parse, or nil: the first parse failed or ctx ended
			if !mine {
				pg = &parityPageRouters{providers: map[string]int{}}
			}
			err = sc.routers(body, func(rt *parityRouter) {
				if rt.Provider == "internal" || (!s.IgnoreRouters.IsZero() && s.IgnoreRouters.Match(rt.Name)) {
					pg.dropped++
					return
				}
				pg.providers[rt.Provider]++
				if rt.Broken {
					pg.broken++
				}
				key = parityKey(key[:0], s, prefix, rt)
				pg.ids = append(pg.ids, keys.id(key))
			})
			if mine {
				pg.publish(err == nil)
			}
			if err == nil {
				pg.addTo(r)
			}
			return err
		}, func(h http.Header) { next = h.Get("X-Next-Page") })
		if err != nil {
			return fmt.Errorf("%s page %d: %w", path, page, err)
		}
		r.pages++
		n, err := strconv.Atoi(next)
		switch {
		case next == "":
			return fmt.Errorf("%s page %d: no X-Next-Page header: not the Traefik v2/v3 API?", path, page)
		case err != nil || n < 1:
			return fmt.Errorf("%s page %d: bad X-Next-Page %q", path, page, next)
		case n == 1:
			return nil
		case n <= page:
			return fmt.Errorf("%s page %d: X-Next-Page %d goes backwards", path, page, n)
		}
		page = n
	}
}

// parityPages keeps page buffers between lists and probes: a 50-replica
// probe would otherwise grow fifty fresh buffers to the page size each time.
var parityPages sync.Pool

// parityPage returns an empty buffer, its capacity charged to lease.
func parityPage(lease *Lease) ([]byte, error) {
	bp, _ := parityPages.Get().(*[]byte)
	if bp == nil {
		return nil, nil
	}
	if err := lease.grow(int64(cap(*bp))); err != nil {
		parityPages.Put(bp)
		return nil, err
	}
	return (*bp)[:0], nil
}

// parityKey appends to b the identity compared across replicas. Names
// come first so a router whose rule differs shows as missing and extra
// under one name.
func parityKey(b []byte, s *TraefikParitySettings, prefix string, r *parityRouter) []byte {
	b = append(append(b, prefix...), r.Name...)
	if s.compareRule {
		b = append(append(b, " rule="...), r.Rule...)
	}
	if s.compareService {
		b = append(append(b, " service="...), r.Service...)
	}
	return b
}

var errParityTooLarge = errors.New("response too large")

// parityCapReader fails once more than left bytes arrive.
type parityCapReader struct {
	r    io.Reader
	left int64
}

func (c *parityCapReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			return 0, errParityTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// parityGet fetches one API path and hands the capped body to decode,
// turning every way a reply can be wrong into an error that says which.
func parityGet(ctx context.Context, client *http.Client, s *TraefikParitySettings, base *url.URL, path string, q url.Values, decode func(io.Reader) error, headers ...func(http.Header)) error {
	u := *base
	u.Path = base.Path + path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer before the probe deadline: %w", ctx.Err())
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		hint := ""
		switch {
		case resp.StatusCode == http.StatusNotFound && strings.HasPrefix(string(snippet), "404 page not found"):
			hint = " (is the Traefik API enabled on this port? api.insecure / the traefik entrypoint)"
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			hint = fmt.Sprintf(" (redirect to %q: authentication in front of the API?)", resp.Header.Get("Location"))
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			hint = " (check http_client_config credentials)"
		}
		return fmt.Errorf("HTTP %d: %q%s", resp.StatusCode, strings.TrimSpace(string(snippet)), hint)
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return fmt.Errorf("content type %q, want application/json: not the Traefik API (a login page or the wrong port?)", ct)
	}
	for _, h := range headers {
		h(resp.Header)
	}
	body := &parityCapReader{r: resp.Body, left: int64(s.MaxResponseBytes)}
	if err := decode(body); err != nil {
		return parityDecodeError(ctx, err, s)
	}
	// Read to EOF: the decoder stops after the value, and a body closed
	// before EOF takes its connection with it instead of reusing it.
	rest, err := io.ReadAll(body)
	if err != nil {
		return parityDecodeError(ctx, err, s)
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return errors.New("unexpected data after the JSON document: not a Traefik API answer")
	}
	return nil
}

func parityDecodeError(ctx context.Context, err error, s *TraefikParitySettings) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, errParityTooLarge):
		return fmt.Errorf("response larger than max_response_bytes (%d bytes)", s.MaxResponseBytes)
	case ctx.Err() != nil:
		return fmt.Errorf("reply not complete before the probe deadline: %w", ctx.Err())
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return errors.New("truncated JSON: the reply ended mid-document")
	case errors.As(err, &syn):
		return fmt.Errorf("invalid JSON at byte %d: %v", syn.Offset, err)
	case errors.As(err, &typ):
		return fmt.Errorf("unexpected JSON shape (%v): not a Traefik API answer", err)
	}
	return err
}

// parityScanner reads a Traefik router list in one pass, keeping only the
// fields compared. encoding/json scans every page twice and decodes by
// reflection; on 20 replicas × 5,000 routers that was most of the probe.
// It accepts what encoding/json accepts for the fields it reads and skips
// other values without validating numbers; it never reads past data.
type parityScanner struct {
	data          []byte
	pos           int
	intern        map[string]string // provider names: a handful, reused
	rule, service bool
	scratch       parityRouter
}

var errParityEOF = io.ErrUnexpectedEOF

func (p *parityScanner) routers(data []byte, fn func(*parityRouter)) error {
	p.data, p.pos = data, 0
	defer func() { p.data = nil }()
	p.ws()
	if err := p.expect('['); err != nil {
		return p.shapeError("an array of routers", err)
	}
	p.ws()
	if p.peek() == ']' {
		p.pos++
		return p.end()
	}
	for {
		p.ws()
		if err := p.router(); err != nil {
			return err
		}
		fn(&p.scratch)
		p.ws()
		switch c := p.peek(); c {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return p.end()
		case 0:
			return errParityEOF
		default:
			return p.syntax(fmt.Sprintf("unexpected %q after a router", c))
		}
	}
}

func (p *parityScanner) end() error {
	p.ws()
	if p.pos != len(p.data) {
		return errors.New("unexpected data after the JSON document: not a Traefik API answer")
	}
	return nil
}

func (p *parityScanner) router() error {
	r := &p.scratch
	*r = parityRouter{}
	// Last key wins, as in encoding/json.
	disabled, errs := false, 0
	if err := p.expect('{'); err != nil {
		return p.shapeError("router objects", err)
	}
	p.ws()
	if p.peek() == '}' {
		p.pos++
		return errors.New("a router without a name: not a Traefik router list")
	}
	for {
		p.ws()
		key, esc, err := p.rawString()
		if err != nil {
			return err
		}
		p.ws()
		if err := p.expect(':'); err != nil {
			return err
		}
		p.ws()
		if esc { // no Traefik key is escaped; decode it to be exact
			k, err := p.unescape(key)
			if err != nil {
				return err
			}
			key = []byte(k)
		}
		switch string(key) {
		case "name":
			r.Name, err = p.bytesValue()
		case "provider":
			r.Provider, err = p.stringValue(true)
		case "rule":
			if p.rule {
				r.Rule, err = p.bytesValue()
			} else {
				err = p.skip()
			}
		case "service":
			if p.service {
				r.Service, err = p.bytesValue()
			} else {
				err = p.skip()
			}
		case "status":
			var st string
			st, err = p.stringValue(true)
			disabled = st == "disabled"
		case "error":
			errs, err = p.stringArrayLen()
		default:
			err = p.skip()
		}
		if err != nil {
			return err
		}
		p.ws()
		switch c := p.peek(); c {
		case ',':
			p.pos++
		case '}':
			p.pos++
			if len(r.Name) == 0 {
				return errors.New("a router without a name: not a Traefik router list")
			}
			r.Broken = disabled || errs > 0
			return nil
		case 0:
			return errParityEOF
		default:
			return p.syntax(fmt.Sprintf("unexpected %q in a router object", c))
		}
	}
}

// peek returns the next byte, 0 at the end (0 is never valid JSON outside
// strings).
func (p *parityScanner) peek() byte {
	if p.pos >= len(p.data) {
		return 0
	}
	return p.data[p.pos]
}

func (p *parityScanner) ws() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parityScanner) expect(c byte) error {
	switch p.peek() {
	case c:
		p.pos++
		return nil
	case 0:
		return errParityEOF
	}
	return p.syntax(fmt.Sprintf("want %q, got %q", c, p.peek()))
}

func (p *parityScanner) syntax(msg string) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", p.pos, msg)
}

func (p *parityScanner) shapeError(want string, err error) error {
	if err == errParityEOF {
		return err
	}
	got := "something else"
	switch p.peek() {
	case '{':
		got = "an object"
	case '[':
		got = "an array"
	case '"':
		got = "a string"
	case 'n':
		got = "null"
	}
	return fmt.Errorf("unexpected JSON shape (want %s, got %s): not a Traefik API answer", want, got)
}

// rawString consumes a string and returns its bytes between the quotes,
// and whether they contain escapes.
func (p *parityScanner) rawString() ([]byte, bool, error) {
	if err := p.expect('"'); err != nil {
		return nil, false, err
	}
	start, esc, ascii := p.pos, false, true
	data := p.data
	for i := p.pos; i < len(data); {
		// Most bytes of a router list are plain ASCII inside strings:
		// eight at a time while none of them needs a look.
		for i+8 <= len(data) && !paritySpecialWord(binary.LittleEndian.Uint64(data[i:])) {
			i += 8
		}
		if i >= len(data) {
			break
		}
		c := data[i]
		if !parityStringStop[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			s := data[start:i]
			p.pos = i + 1
			// Names and providers become label values and log text; a
			// replica that sends bytes JSON does not allow is reported
			// down for it, and the other replicas are still compared.
			if !ascii && !utf8.Valid(s) {
				return nil, false, p.syntax("invalid UTF-8 in a string")
			}
			return s, esc, nil
		case c == '\\':
			esc = true
			i += 2
		case c < 0x20:
			p.pos = i
			return nil, false, p.syntax("control character in a string")
		default: // >= 0x80: checked as UTF-8 once the string ends
			ascii = false
			i++
		}
	}
	p.pos = len(data)
	return nil, false, errParityEOF
}

// paritySpecialWord reports whether any of eight bytes may be one of
// parityStringStop's (false positives only send the scan byte by byte).
func paritySpecialWord(w uint64) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) uint64 { return (v - lo) & ^v & hi }
	return (w&hi)|((w-0x20*lo) & ^w & hi)|hasZero(w^('"'*lo))|hasZero(w^('\\'*lo)) != 0
}

// parityStringStop marks the bytes rawString must look at: the end of a
// string, an escape, a control character, and non-ASCII.
var parityStringStop = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80
	}
	return t
}()

func (p *parityScanner) unescape(raw []byte) (string, error) {
	quoted := make([]byte, 0, len(raw)+2)
	quoted = append(append(append(quoted, '"'), raw...), '"')
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		return "", p.syntax(err.Error())
	}
	return s, nil
}

// bytesValue reads a string (null reads as empty) without allocating
// unless it has escapes; the bytes are valid until the next page.
func (p *parityScanner) bytesValue() ([]byte, error) {
	if p.peek() == 'n' {
		return nil, p.literal("null")
	}
	if p.peek() != '"' && p.peek() != 0 {
		return nil, p.shapeError("a string field", p.syntax("not a string"))
	}
	raw, esc, err := p.rawString()
	if err != nil || !esc {
		return raw, err
	}
	v, err := p.unescape(raw)
	return []byte(v), err
}

// stringValue reads a string (null reads as ""). Interned values are the
// few distinct providers and statuses: no allocation per router.
func (p *parityScanner) stringValue(intern bool) (string, error) {
	if p.peek() == 'n' {
		return "", p.literal("null")
	}
	if p.peek() != '"' && p.peek() != 0 {
		return "", p.shapeError("a string field", p.syntax("not a string"))
	}
	raw, esc, err := p.rawString()
	if err != nil {
		return "", err
	}
	if esc {
		return p.unescape(raw)
	}
	if intern {
		if v, ok := p.intern[string(raw)]; ok {
			return v, nil
		}
		v := string(raw)
		if len(p.intern) < 64 {
			p.intern[v] = v
		}
		return v, nil
	}
	return string(raw), nil
}

// stringArrayLen reads an array of strings (or null) and counts them.
func (p *parityScanner) stringArrayLen() (int, error) {
	if p.peek() == 'n' {
		return 0, p.literal("null")
	}
	if err := p.expect('['); err != nil {
		return 0, p.shapeError("an array of strings", err)
	}
	p.ws()
	if p.peek() == ']' {
		p.pos++
		return 0, nil
	}
	for n := 1; ; n++ {
		p.ws()
		if _, _, err := p.rawString(); err != nil {
			return 0, err
		}
		p.ws()
		switch c := p.peek(); c {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return n, nil
		case 0:
			return 0, errParityEOF
		default:
			return 0, p.syntax(fmt.Sprintf("unexpected %q in an array", c))
		}
	}
}

func (p *parityScanner) literal(lit string) error {
	if len(p.data)-p.pos < len(lit) {
		return errParityEOF
	}
	if string(p.data[p.pos:p.pos+len(lit)]) != lit {
		return p.syntax("invalid literal")
	}
	p.pos += len(lit)
	return nil
}

// skip consumes one value of any type. Containers are skipped by counting
// brackets outside strings, iteratively: nesting depth cannot exhaust the
// stack.
func (p *parityScanner) skip() error {
	switch c := p.peek(); {
	case c == 0:
		return errParityEOF
	case c == '"':
		_, _, err := p.rawString()
		return err
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		for p.pos < len(p.data) && strings.IndexByte("+-.eE0123456789", p.data[p.pos]) >= 0 {
			p.pos++
		}
		if p.pos == len(p.data) {
			return errParityEOF
		}
		if p.pos == start+1 && c == '-' {
			return p.syntax("bad number")
		}
		return nil
	case c != '{' && c != '[':
		return p.syntax(fmt.Sprintf("unexpected %q", c))
	}
	var stackBuf [32]byte
	stack := stackBuf[:0]
	for p.pos < len(p.data) {
		switch c := p.data[p.pos]; c {
		case '"':
			if _, _, err := p.rawString(); err != nil {
				return err
			}
			continue
		case '{', '[':
			stack = append(stack, c)
		case '}', ']':
			open := byte('{')
			if c == ']' {
				open = '['
			}
			if len(stack) == 0 || stack[len(stack)-1] != open {
				return p.syntax(fmt.Sprintf("unbalanced %q", c))
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				p.pos++
				return nil
			}
		}
		p.pos++
	}
	return errParityEOF
}

// parityGroup is a set of replicas with identical tables.
type parityGroup struct {
	ids     []uint32
	members []*parityReplica
}

func compareParity(replicas []*parityReplica, s *TraefikParitySettings, keys *parityKeys, reg *Metrics, logger *slog.Logger) bool {
	perReplica := []string{"replica", "namespace", "pod"}
	var (
		gReplicas  = newGauge("probe_traefik_replicas", "Traefik replicas discovered (including those in their grace period).")
		gUp        = newGauge("probe_traefik_replicas_up", "Traefik replicas whose API answered with a complete router table.")
		gConsensus = newGauge("probe_traefik_consensus_routers", "Routers in the reference table (the majority's; on a tie, the union of the tied tables).")
		gSkew      = newGauge("probe_traefik_max_skew", "Largest missing+extra router count of any replica outside its grace period.")
		rUp        = newGaugeVec("probe_traefik_replica_up", "1 if the replica's API answered with a complete router table.", perReplica...)
		rRouters   = newGaugeVec("probe_traefik_replica_routers", "Routers the replica lists, by provider (internal and ignored routers excluded).", append(perReplica, "provider")...)
		rMissing   = newGaugeVec("probe_traefik_replica_missing_routers", "Routers in the reference table that the replica lacks.", perReplica...)
		rExtra     = newGaugeVec("probe_traefik_replica_extra_routers", "Routers the replica has that the reference table lacks.", perReplica...)
		rBroken    = newGaugeVec("probe_traefik_replica_broken_routers", "Routers the replica lists as disabled or with errors.", perReplica...)
		rGrace     = newGaugeVec("probe_traefik_replica_in_grace", "1 if the replica is younger than grace_period and left out of the comparison.", perReplica...)
		rInfo      = newGaugeVec("probe_traefik_replica_info", "Traefik version of the replica (value 1).", append(perReplica, "version")...)
	)
	reg.MustRegister(gReplicas, gUp, rUp, rGrace)
	gReplicas.Set(float64(len(replicas)))

	var groups []*parityGroup
	considered, up, consideredUp := 0, 0, 0
	providers := map[string]bool{}
	for _, r := range replicas {
		lv := []string{r.label, r.namespace, r.pod}
		rGrace.WithLabelValues(lv...).Set(boolValue(r.inGrace))
		if r.err != nil {
			rUp.WithLabelValues(lv...).Set(0)
			logger.Warn("replica down", parityLogAttrs(r, "err", r.err)...)
		} else {
			up++
			rUp.WithLabelValues(lv...).Set(1)
			for p := range r.providers {
				providers[p] = true
			}
		}
		if r.inGrace {
			logger.Info("replica in grace period: not compared", parityLogAttrs(r, "age", r.age.Round(time.Second).String())...)
			continue
		}
		considered++
		if r.err != nil {
			continue
		}
		consideredUp++
		found := false
		for _, g := range groups {
			if slices.Equal(g.ids, r.ids) {
				g.members = append(g.members, r)
				found = true
				break
			}
		}
		if !found {
			groups = append(groups, &parityGroup{ids: r.ids, members: []*parityReplica{r}})
		}
	}
	gUp.Set(float64(up))
	switch {
	case len(replicas) == 0:
		logger.Error("no replicas found for the target")
		return false
	case up == 0:
		logger.Error("no replica answered", "replicas", len(replicas))
		return false
	}
	reg.MustRegister(rRouters, rMissing, rExtra, rBroken, rInfo)

	ref, how := parityReference(groups, consideredUp)
	if len(groups) > 0 {
		reg.MustRegister(gConsensus)
		gConsensus.Set(float64(len(ref)))
	}
	logger.Info("reference table", "routers", len(ref), "chosen_by", how, "distinct_tables", len(groups), "replicas_compared", consideredUp)

	maxSkew := 0
	for _, r := range replicas {
		if r.err != nil {
			continue
		}
		lv := []string{r.label, r.namespace, r.pod}
		rInfo.WithLabelValues(append(lv, r.version)...).Set(1)
		for p := range providers {
			rRouters.WithLabelValues(append(lv, p)...).Set(float64(r.providers[p]))
		}
		rBroken.WithLabelValues(lv...).Set(float64(r.broken))
		if ref == nil && len(groups) == 0 {
			// Every up replica is in grace: nothing to compare against.
			continue
		}
		missing, extra := parityDiff(ref, r.ids)
		r.missing, r.extra = keys.names(missing), keys.names(extra)
		rMissing.WithLabelValues(lv...).Set(float64(len(r.missing)))
		rExtra.WithLabelValues(lv...).Set(float64(len(r.extra)))
		if !r.inGrace {
			maxSkew = max(maxSkew, len(r.missing)+len(r.extra))
		}
		attrs := parityLogAttrs(r, "version", r.version, "routers", len(r.ids), "providers", fmt.Sprint(r.providers),
			"broken", r.broken, "dropped", r.dropped, "pages", r.pages, "missing", len(r.missing), "extra", len(r.extra))
		if len(r.missing)+len(r.extra) == 0 {
			logger.Info("replica matches the reference", attrs...)
			continue
		}
		attrs = append(attrs, "missing_by_provider", parityByProvider(r.missing), "extra_by_provider", parityByProvider(r.extra))
		logger.Warn("replica differs from the reference", attrs...)
		if len(r.missing) > 0 {
			logger.Warn("missing routers", parityLogAttrs(r, "routers", parityNames(r.missing))...)
		}
		if len(r.extra) > 0 {
			logger.Warn("extra routers", parityLogAttrs(r, "routers", parityNames(r.extra))...)
		}
	}
	if len(groups) > 0 {
		reg.MustRegister(gSkew)
		gSkew.Set(float64(maxSkew))
	}

	switch {
	case considered == 0:
		logger.Error("no replica outside its grace period to compare", "replicas", len(replicas))
		return false
	case consideredUp < considered:
		logger.Error("replicas down", "down", considered-consideredUp, "compared", considered)
		return false
	case len(groups) > 1:
		logger.Error("replicas disagree on the routing table", "distinct_tables", len(groups), "max_skew", maxSkew)
		return false
	}
	return true
}

func parityLogAttrs(r *parityReplica, kv ...any) []any {
	attrs := []any{"replica", r.label}
	if r.pod != "" {
		attrs = append(attrs, "namespace", r.namespace, "pod", r.pod)
	}
	return append(attrs, kv...)
}

// parityReference picks the table replicas are compared against: the one
// shared by more than half; otherwise the union of the largest groups, so
// that a replica lacking routers others have is always the one flagged.
func parityReference(groups []*parityGroup, n int) ([]uint32, string) {
	if len(groups) == 0 {
		return nil, "none"
	}
	best := 0
	for _, g := range groups {
		best = max(best, len(g.members))
	}
	var tied []*parityGroup
	for _, g := range groups {
		if len(g.members) == best {
			tied = append(tied, g)
		}
	}
	if len(tied) == 1 {
		if 2*best > n {
			return tied[0].ids, "majority"
		}
		return tied[0].ids, "plurality"
	}
	var union []uint32
	for _, g := range tied {
		union = parityUnion(union, g.ids)
	}
	return union, fmt.Sprintf("union of %d tied tables", len(tied))
}

// parityByProvider summarises router keys as "kubernetes:100 file:2", the
// shape of the seed incident at a glance.
func parityByProvider(keys []string) string {
	count := map[string]int{}
	for _, k := range keys {
		name, _, _ := strings.Cut(k, " ")
		p := "?"
		if i := strings.LastIndexByte(name, '@'); i >= 0 {
			p = name[i+1:]
		}
		count[p]++
	}
	out := make([]string, 0, len(count))
	for _, p := range slices.Sorted(maps.Keys(count)) {
		out = append(out, p+":"+strconv.Itoa(count[p]))
	}
	return strings.Join(out, " ")
}

// parityNames joins at most parityLogNames names for a log line.
func parityNames(names []string) string {
	if len(names) <= parityLogNames {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:parityLogNames], ", ") + fmt.Sprintf(" ... and %d more", len(names)-parityLogNames)
}
