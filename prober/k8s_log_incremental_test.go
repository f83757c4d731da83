package prober

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/greybox-probe/greybox/config"
)

// logEntry is one line of a container's log file as the kubelet keeps it.
// An open line is still being written: served without its newline, as the
// kubelet serves a partial CRI record, and it may grow before it ends.
type logEntry struct {
	ts   time.Time
	text string
	open bool
}

// fakeContainer is one container of a fake pod: its current log file and
// the previous (terminated) container's.
type fakeContainer struct {
	id, prevID   string
	restarts     int32
	cur, prev    []logEntry
	prevFinished time.Time
}

// logAPI is a kube-apiserver (with the kubelet behind it) that serves pod
// lists and pod logs the way protocols/kubernetes.md records: sinceSeconds
// measured from the server's clock, sinceTime in whole seconds, not both,
// timestamps=true as an RFC3339Nano prefix, limitBytes cutting anywhere,
// previous=true for the terminated container, only the current file after
// a rotation. Its clock is the test's.
type logAPI struct {
	mu   sync.Mutex
	now  time.Time
	uid  types.UID
	ctrs map[string]*fakeContainer // by pod name; one container each
	// bytes is what the log endpoint sent, in all.
	bytes int64
}

const logAPIContainer = "whisker-backend"

func newLogAPI(now time.Time, pods ...string) *logAPI {
	a := &logAPI{now: now, uid: "uid-1", ctrs: map[string]*fakeContainer{}}
	for _, p := range pods {
		a.ctrs[p] = &fakeContainer{id: "containerd://" + p + "-0"}
	}
	return a
}

func (a *logAPI) clock() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.now
}

func (a *logAPI) advance(d time.Duration) {
	a.mu.Lock()
	a.now = a.now.Add(d)
	a.mu.Unlock()
}

// write appends a line to the pod's current log at ts.
func (a *logAPI) write(pod string, ts time.Time, text string, open bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.ctrs[pod]
	if n := len(c.cur); n > 0 && c.cur[n-1].open {
		panic("test: write after an open line; close it first")
	}
	c.cur = append(c.cur, logEntry{ts: ts, text: text, open: open})
}

// finish ends the open last line, after more of it arrived.
func (a *logAPI) finish(pod, more string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.ctrs[pod]
	e := &c.cur[len(c.cur)-1]
	e.text += more
	e.open = false
}

// restart ends the container: its log becomes the previous one.
func (a *logAPI) restart(pod string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.ctrs[pod]
	c.prev, c.cur = c.cur, nil
	c.prevID = c.id
	c.prevFinished = a.now
	c.restarts++
	c.id = fmt.Sprintf("containerd://%s-%d", pod, c.restarts)
}

// rotate is the kubelet's log rotation: the current file is renamed away
// and no longer served.
func (a *logAPI) rotate(pod string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ctrs[pod].cur = nil
}

func (a *logAPI) replacePod(newUID types.UID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.uid = newUID
	for name := range a.ctrs {
		a.ctrs[name] = &fakeContainer{id: "containerd://" + name + "-new"}
	}
}

func (a *logAPI) sent() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bytes
}

func (a *logAPI) pod(name string, c *fakeContainer) corev1.Pod {
	cs := corev1.ContainerStatus{Name: logAPIContainer, RestartCount: c.restarts, ContainerID: c.id, Ready: true}
	if c.prevID != "" {
		cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
			ContainerID: c.prevID, FinishedAt: metav1.NewTime(c.prevFinished),
		}
	}
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "calico-system", UID: a.uid, Labels: map[string]string{"k8s-app": "whisker"}},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: logAPIContainer}}},
		Status: corev1.PodStatus{
			Phase:             corev1.PodRunning,
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{cs},
		},
	}
}

func (a *logAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case r.URL.Path == "/api/v1/namespaces/calico-system/pods":
		list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
		for _, name := range sortedKeys(a.ctrs) {
			list.Items = append(list.Items, a.pod(name, a.ctrs[name]))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(list)
	case len(parts) == 7 && parts[4] == "pods" && parts[6] == "log" && a.ctrs[parts[5]] != nil:
		a.serveLog(w, r, a.ctrs[parts[5]])
	default:
		http.NotFound(w, r)
	}
}

func (a *logAPI) serveLog(w http.ResponseWriter, r *http.Request, c *fakeContainer) {
	q := r.URL.Query()
	fail := func(code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Message: msg, Code: int32(code)})
	}
	if ctr := q.Get("container"); ctr != "" && ctr != logAPIContainer {
		fail(400, fmt.Sprintf("container %s is not valid for pod", ctr))
		return
	}
	var since time.Time
	switch {
	case q.Has("sinceSeconds") && q.Has("sinceTime"):
		fail(422, "at most one of sinceTime or sinceSeconds may be specified")
		return
	case q.Has("sinceSeconds"):
		n, err := strconv.ParseInt(q.Get("sinceSeconds"), 10, 64)
		if err != nil || n <= 0 {
			fail(422, "sinceSeconds: Invalid value")
			return
		}
		since = a.now.Add(-time.Duration(n) * time.Second)
	case q.Has("sinceTime"):
		t, err := time.Parse(time.RFC3339, q.Get("sinceTime"))
		if err != nil {
			fail(422, "sinceTime: Invalid value")
			return
		}
		since = t.Truncate(time.Second) // the wire carries whole seconds
	}
	limit := int64(-1)
	if q.Has("limitBytes") {
		n, err := strconv.ParseInt(q.Get("limitBytes"), 10, 64)
		if err != nil || n <= 0 {
			fail(422, "limitBytes: Invalid value")
			return
		}
		limit = n
	}
	file := c.cur
	if q.Get("previous") == "true" {
		if c.prevID == "" {
			fail(400, "previous terminated container \"whisker-backend\" in pod \"x\" not found")
			return
		}
		file = c.prev
	}
	var b strings.Builder
	for _, e := range file {
		if e.ts.Before(since) {
			continue
		}
		if q.Get("timestamps") == "true" {
			b.WriteString(e.ts.UTC().Format(time.RFC3339Nano) + " ")
		}
		b.WriteString(e.text)
		if !e.open {
			b.WriteByte('\n')
		}
	}
	out := b.String()
	if limit >= 0 && int64(len(out)) > limit {
		out = out[:limit]
	}
	a.bytes += int64(len(out))
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(out))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// oracle counts what the window holds by definition: matching lines of
// the current file (and, with previous, of the terminated container's when
// it ended inside the window) whose timestamp is at or after now-window.
func (a *logAPI) oracle(pod string, window time.Duration, previous bool, match func(string) bool) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.ctrs[pod]
	since := a.now.Add(-window)
	n := 0
	count := func(f []logEntry) {
		for _, e := range f {
			if !e.ts.Before(since) && match(e.text) {
				n++
			}
		}
	}
	count(c.cur)
	if previous && c.prevID != "" && a.now.Sub(c.prevFinished) <= window {
		count(c.prev)
	}
	return n
}

const incrementalModule = `
prober: k8s_log_errors
timeout: 10s
k8s_log_errors:
  container: whisker-backend
  window: 11m
  patterns:
    - failed to stream flows
    - 'code = Unavailable.*goldmane'
  threshold: 10
`

var goldmaneRE = regexp.MustCompile(`code = Unavailable.*goldmane`)

func whiskerMatch(s string) bool {
	return strings.Contains(s, "failed to stream flows") || goldmaneRE.MatchString(s)
}

// logModules returns the same module reading the full window and
// reading incrementally, both on the fake API's clock.
func logModules(t testing.TB, api *logAPI, extra string) (full, incr config.Module) {
	t.Helper()
	full = testModule(t, incrementalModule+extra)
	incr = testModule(t, incrementalModule+extra+"\n  incremental: true")
	full.Settings.(*K8sLogErrorsSettings).now = api.clock
	incr.Settings.(*K8sLogErrorsSettings).now = api.clock
	return full, incr
}

// whiskerTimeline writes second [from, to) of a noisy whisker log for pod:
// zero to four lines a second, about one in five an error, some at the
// second's very start, and now and then a line stamped a little before
// the one above it (stdout and stderr interleave), also across seconds.
func whiskerTimeline(api *logAPI, rng *rand.Rand, pod string, t0 time.Time, from, to int) {
	for sec := from; sec < to; sec++ {
		base := t0.Add(time.Duration(sec) * time.Second)
		n := rng.IntN(5)
		offs := make([]int, n)
		for i := range offs {
			if rng.IntN(8) == 0 {
				offs[i] = 0
			} else {
				offs[i] = rng.IntN(int(time.Second))
			}
		}
		slices.Sort(offs)
		for i, o := range offs {
			ts := base.Add(time.Duration(o))
			if i == 0 && rng.IntN(10) == 0 {
				ts = ts.Add(-3 * time.Millisecond) // stderr behind stdout
			}
			var text string
			switch r := rng.IntN(10); {
			case r == 0:
				text = fmt.Sprintf("%s [ERROR][1] flows.go 92: failed to stream flows error=rpc error: code = Unavailable desc = lookup goldmane: i/o timeout n=%d", pod, sec)
			case r == 1:
				text = fmt.Sprintf("%s [WARN][1] client.go 40: code = Unavailable desc = dial goldmane.calico-system.svc n=%d", pod, sec)
			default:
				text = fmt.Sprintf("%s [INFO][1] flows.go 85: Received flow batch count=%d cluster=default", pod, rng.IntN(97))
			}
			api.write(pod, ts, text, false)
		}
	}
}

type scrapeResult struct {
	matched, bytes, resumed float64
}

// scrape probes the target once and returns each pod's series.
func scrape(t *testing.T, m config.Module, env Env, pods ...string) (map[string]scrapeResult, bool, string) {
	t.Helper()
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, env)
	out := map[string]scrapeResult{}
	for _, pod := range pods {
		l := ctr(pod, logAPIContainer)
		var sr scrapeResult
		var found bool
		if sr.matched, found = metricValue(t, r.reg, "probe_k8s_log_matched_lines", l); !found {
			t.Fatalf("no matched_lines for %s:\n%s", pod, r.logs)
		}
		sr.bytes, _ = metricValue(t, r.reg, "probe_k8s_log_scanned_bytes", l)
		sr.resumed, _ = metricValue(t, r.reg, "probe_k8s_log_incremental", l)
		out[pod] = sr
	}
	return out, r.ok, r.logs
}

// fastClient is client-go pointed at srv without its default rate limit
// (5 requests/s), which would pace a test of many scrapes.
func fastClient(t testing.TB, srv *httptest.Server) Env {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, Transport: tr, QPS: -1})
	if err != nil {
		t.Fatal(err)
	}
	return Env{Kube: func() (kubernetes.Interface, error) { return cs, nil }}
}

// The incremental mode counts exactly what a full read of the window
// counts, scrape after scrape, through a container restart, a log
// rotation, a line still being written, a line longer than the scanner's
// buffer and a replaced pod, and reads far fewer bytes doing it.
func TestK8sLogErrorsIncrementalMatchesFullRead(t *testing.T) {
	for _, previous := range []bool{false, true} {
		t.Run(fmt.Sprintf("previous=%v", previous), func(t *testing.T) {
			t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
			api := newLogAPI(t0, "whisker-1", "whisker-2")
			srv := httptest.NewServer(api)
			defer srv.Close()
			env := fastClient(t, srv)
			extra := ""
			if previous {
				extra = "\n  previous: true"
			}
			full, incr := logModules(t, api, extra)
			rng := rand.New(rand.NewPCG(13, uint64(len(extra))))

			const step = 30
			written := 0
			var fullBytes, incrBytes float64
			pods := []string{"whisker-1", "whisker-2"}
			for at := 60; at <= 40*60; at += step {
				if at == 27*60+step {
					// Finished before the next scrape, and now a match.
					api.finish("whisker-1", " flows, again")
				}
				for _, pod := range pods {
					whiskerTimeline(api, rng, pod, t0, written, at)
				}
				written = at
				api.advance(t0.Add(time.Duration(at) * time.Second).Sub(api.clock()))
				now := api.clock()
				event := ""
				switch at {
				case 12 * 60:
					event = "restart"
					api.restart("whisker-1")
					whiskerTimeline(api, rng, "whisker-1", t0, at-1, at) // the new container's first words
				case 15 * 60:
					long := strings.Repeat("x", 300<<10) + " failed to stream flows"
					api.write("whisker-1", now.Add(-500*time.Millisecond), long, false)
				case 21 * 60:
					event = "rotate"
					api.rotate("whisker-1")
					whiskerTimeline(api, rng, "whisker-1", t0, at-2, at)
				case 27 * 60:
					api.write("whisker-1", now.Add(-time.Millisecond), "half a line: failed to stream", true)
				case 33 * 60:
					event = "replaced"
					api.replacePod("uid-2")
					whiskerTimeline(api, rng, "whisker-1", t0, at-3, at)
					whiskerTimeline(api, rng, "whisker-2", t0, at-3, at)
				}
				f, fok, _ := scrape(t, full, env, pods...)
				i, iok, ilogs := scrape(t, incr, env, pods...)
				if fok != iok {
					t.Fatalf("t=%ds (%s): full ok=%v, incremental ok=%v\n%s", at, event, fok, iok, ilogs)
				}
				for _, pod := range pods {
					want := api.oracle(pod, 11*time.Minute, previous, whiskerMatch)
					if f[pod].matched != float64(want) || i[pod].matched != float64(want) {
						t.Fatalf("t=%ds %s (%s): full %v, incremental %v, window holds %d\n%s",
							at, pod, event, f[pod].matched, i[pod].matched, want, ilogs)
					}
					fresh := at == 60 || event == "replaced" || pod == "whisker-1" && (event == "restart" || event == "rotate")
					if fresh != (i[pod].resumed == 0) {
						t.Errorf("t=%ds %s (%s): probe_k8s_log_incremental = %v\n%s", at, pod, event, i[pod].resumed, ilogs)
					}
					if !fresh {
						fullBytes += f[pod].bytes
						incrBytes += i[pod].bytes
					}
				}
			}
			// Bytes, not time: deterministic for this seeded log.
			if incrBytes*5 > fullBytes {
				t.Errorf("incremental scrapes read %.0f bytes, full reads %.0f: less than 5x fewer", incrBytes, fullBytes)
			}
			t.Logf("bytes read by resumed scrapes: full %.0f, incremental %.0f (%.1fx fewer)", fullBytes, incrBytes, fullBytes/incrBytes)
		})
	}
}

// Concurrent probes of one target each count the window exactly, whatever
// order their reads and stores interleave in; run under -race.
func TestK8sLogErrorsIncrementalConcurrent(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	api := newLogAPI(t0, "whisker-1")
	srv := httptest.NewServer(api)
	defer srv.Close()
	env := fastClient(t, srv)
	_, incr := logModules(t, api, "")
	rng := rand.New(rand.NewPCG(7, 7))
	written := 0
	for at := 60; at <= 20*60; at += 60 {
		whiskerTimeline(api, rng, "whisker-1", t0, written, at)
		written = at
		api.advance(t0.Add(time.Duration(at) * time.Second).Sub(api.clock()))
		want := float64(api.oracle("whisker-1", 11*time.Minute, false, whiskerMatch))
		var wg sync.WaitGroup
		got := make([]float64, 6)
		for k := range got {
			wg.Go(func() {
				r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", incr, env)
				got[k], _ = metricValue(t, r.reg, "probe_k8s_log_matched_lines", ctr("whisker-1", logAPIContainer))
			})
		}
		wg.Wait()
		for k, g := range got {
			if g != want {
				t.Fatalf("t=%ds probe %d: matched %v, window holds %v", at, k, g, want)
			}
		}
	}
}

func TestK8sLogErrorsIncrementalWire(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	api := newLogAPI(t0.Add(20*time.Minute), "whisker-1")
	api.write("whisker-1", t0.Add(19*time.Minute+30*time.Second+250*time.Millisecond), "failed to stream flows", false)
	rec := &recorder{h: api}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	env := fastClient(t, srv)
	_, incr := logModules(t, api, "\n  limit_bytes: 4096")
	for _, want := range []string{"2026-12-02T10:09:00Z", "2026-12-02T10:19:30Z"} {
		runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", incr, env)
		q := rec.lastLog().Query()
		if q.Get("sinceTime") != want || q.Get("timestamps") != "true" || q.Has("sinceSeconds") || q.Get("limitBytes") != "4096" {
			t.Errorf("log query %s, want sinceTime=%s&timestamps=true&limitBytes=4096", q.Encode(), want)
		}
	}
}

// recorder notes the URLs of log requests before handing them on.
type recorder struct {
	h    http.Handler
	mu   sync.Mutex
	logs []*url.URL
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if strings.HasSuffix(req.URL.Path, "/log") {
		r.mu.Lock()
		r.logs = append(r.logs, req.URL)
		r.mu.Unlock()
	}
	r.h.ServeHTTP(w, req)
}

func (r *recorder) lastLog() *url.URL {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.logs) == 0 {
		return &url.URL{}
	}
	return r.logs[len(r.logs)-1]
}

// The state is bounded: the stream probed longest ago goes first, and a
// deleted pod's streams go with the next probe of its target.
func TestK8sLogErrorsIncrementalStateBound(t *testing.T) {
	st := newK8sLogState()
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for i := range k8sLogMaxStreams + 10 {
		st.put(k8sStreamKey{"ns/a=b", "ns", fmt.Sprint("pod-", i), "c"}, &k8sStream{used: t0.Add(time.Duration(i) * time.Second)})
	}
	if n := len(st.streams); n != k8sLogMaxStreams {
		t.Fatalf("%d streams kept, want %d", n, k8sLogMaxStreams)
	}
	if st.get(k8sStreamKey{"ns/a=b", "ns", "pod-9", "c"}) != nil || st.get(k8sStreamKey{"ns/a=b", "ns", "pod-10", "c"}) == nil {
		t.Error("not the oldest streams were evicted")
	}
	st.retain("ns/a=b", []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pod-20"}}})
	if len(st.streams) != 1 || st.get(k8sStreamKey{"ns/a=b", "ns", "pod-20", "c"}) == nil {
		t.Errorf("after retain: %d streams", len(st.streams))
	}
}

func TestK8sLogErrorsIncrementalConfig(t *testing.T) {
	_, err := config.Parse([]byte("modules:\n  m:\n    prober: k8s_log_errors\n    k8s_log_errors:\n      patterns: [x]\n      window: 25h\n      incremental: true\n"), "test.yml")
	if err == nil || !strings.Contains(err.Error(), "too long for incremental (at most 24h") {
		t.Errorf("got %v", err)
	}
	m := testModule(t, "prober: k8s_log_errors\nk8s_log_errors:\n  patterns: [x]\n  window: 25h")
	if m.Settings.(*K8sLogErrorsSettings).Incremental {
		t.Error("incremental is on by default")
	}
}
