// Command promcheck validates eventgw's Prometheus rules and evaluates its alerts, with
// Prometheus's own rule parser and PromQL engine (github.com/prometheus/prometheus).
//
// It stands in for promtool, which is the same code plus service discovery, TSDB and
// remote-storage clients: a cold `go install` of promtool fetched 1.8 GB of modules and
// took over 12 minutes here, this builds in a fraction of that (docs/operations.md).
//
//	promcheck rules FILE...   what `promtool check rules` checks: YAML structure, names,
//	                          every expression parsed, label and annotation templates,
//	                          duplicate rules. Exit 1 with the errors on stderr.
//	promcheck names FILE...   the metric names each rule's expression selects, as JSON
//	                          ({"<alert or record>": ["name", ...]}), from the parsed
//	                          expressions (for the check that each is in names.py).
//	promcheck alerts SPEC     evaluates the alerting rules of SPEC's rule files over SPEC's
//	                          input series, every interval from 0 to the last time asked,
//	                          and prints the alerts firing at each asked time as JSON.
//
// SPEC (JSON):
//
//	{"rule_files": ["alerts.yml"], "interval": "1m",
//	 "series": [{"series": "up{job=\"x\"}", "values": "1+0x30"}],
//	 "times": ["10m", "30m"]}
//
// Series use promtool's expanding notation ("0+1x10", "_" for a missing sample, "stale").
// An alert fires at time T when its expression returned the same label set at every
// evaluation from T - for to T, as Prometheus's rule manager would have it firing.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

var promqlParser = parser.NewParser(parser.Options{})

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: promcheck rules|names FILE... | promcheck alerts SPEC")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "rules":
		err = checkRules(os.Args[2:])
	case "names":
		err = printNames(os.Args[2:])
	case "alerts":
		err = evalAlerts(os.Args[2])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func loadRules(file string) (*rulefmt.RuleGroups, error) {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	groups, errs := rulefmt.ParseFile(file, false, model.UTF8Validation, promqlParser, logger)
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("%s: FAILED:\n%s", file, strings.Join(msgs, "\n"))
	}
	return groups, nil
}

func checkRules(files []string) error {
	var failed []string
	for _, file := range files {
		groups, err := loadRules(file)
		if err != nil {
			failed = append(failed, err.Error())
			continue
		}
		// promtool's default lint: the same alert or record name with the same labels twice.
		seen := map[string]bool{}
		n := 0
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				n++
				key := r.Alert + r.Record + "|" + labels.FromMap(mergeMaps(g.Labels, r.Labels)).String()
				if seen[key] {
					failed = append(failed, fmt.Sprintf("%s: duplicate rule %s", file, key))
				}
				seen[key] = true
			}
		}
		fmt.Printf("%s: SUCCESS: %d rules found\n", file, n)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%s", strings.Join(failed, "\n"))
	}
	return nil
}

func printNames(files []string) error {
	out := map[string][]string{}
	for _, file := range files {
		groups, err := loadRules(file)
		if err != nil {
			return err
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				expr, err := promqlParser.ParseExpr(r.Expr)
				if err != nil {
					return fmt.Errorf("%s: %w", r.Alert+r.Record, err)
				}
				names := []string{}
				parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
					if vs, ok := node.(*parser.VectorSelector); ok {
						name := vs.Name
						for _, m := range vs.LabelMatchers {
							if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
								name = m.Value
							}
						}
						if name == "" {
							names = append(names, "{no metric name: "+vs.String()+"}")
						} else if !slices.Contains(names, name) {
							names = append(names, name)
						}
					}
					return nil
				})
				out[r.Alert+r.Record] = names
			}
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func mergeMaps(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// -- alerts --------------------------------------------------------------------------------

type spec struct {
	RuleFiles []string `json:"rule_files"`
	Interval  string   `json:"interval"`
	Series    []struct {
		Series string `json:"series"`
		Values string `json:"values"`
	} `json:"series"`
	Times []string `json:"times"`
}

type firing struct {
	Alert  string            `json:"alert"`
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
}

func evalAlerts(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var s spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	interval, err := model.ParseDuration(s.Interval)
	if err != nil {
		return fmt.Errorf("interval: %w", err)
	}
	step := time.Duration(interval)
	db, err := loadSeries(s, step)
	if err != nil {
		return err
	}
	var rules []rulefmt.Rule
	for _, file := range s.RuleFiles {
		groups, err := loadRules(file)
		if err != nil {
			return err
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Alert != "" {
					r.Labels = mergeMaps(g.Labels, r.Labels)
					rules = append(rules, r)
				}
			}
		}
	}
	engine := promql.NewEngine(promql.EngineOpts{
		MaxSamples: 1_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute,
	})
	out := map[string][]firing{}
	for _, at := range s.Times {
		d, err := model.ParseDuration(at)
		if err != nil {
			return fmt.Errorf("times: %w", err)
		}
		end := time.Duration(d)
		fired := []firing{}
		for _, r := range rules {
			got, err := firingAt(engine, db, r, end, step)
			if err != nil {
				return fmt.Errorf("alert %s: %w", r.Alert, err)
			}
			fired = append(fired, got...)
		}
		out[at] = fired
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// firingAt returns the label sets of rule r firing at `end`: present at every evaluation
// from end - for to end (the first evaluation at or after 0).
func firingAt(engine *promql.Engine, db storage.Queryable, r rulefmt.Rule, end, step time.Duration) ([]firing, error) {
	start := end - time.Duration(r.For)
	if start < 0 {
		return nil, nil // not evaluated for long enough to fire
	}
	var keep map[string]firing
	for t := start; t <= end; t += step {
		q, err := engine.NewInstantQuery(context.Background(), db, nil, r.Expr, time.Unix(0, 0).Add(t))
		if err != nil {
			return nil, err
		}
		res := q.Exec(context.Background())
		if res.Err != nil {
			return nil, res.Err
		}
		vec, err := res.Vector()
		if err != nil {
			return nil, err
		}
		now := map[string]firing{}
		for _, sample := range vec {
			lbls := sample.Metric.Map()
			delete(lbls, labels.MetricName)
			for k, v := range r.Labels {
				lbls[k] = v
			}
			lbls["alertname"] = r.Alert
			key := labels.FromMap(lbls).String()
			if keep == nil || hasKey(keep, key) {
				now[key] = firing{Alert: r.Alert, Labels: lbls, Value: sample.F}
			}
		}
		q.Close()
		keep = now
		if len(keep) == 0 {
			return nil, nil
		}
	}
	keys := make([]string, 0, len(keep))
	for k := range keep {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]firing, 0, len(keys))
	for _, k := range keys {
		out = append(out, keep[k])
	}
	return out, nil
}

func hasKey(m map[string]firing, key string) bool {
	_, ok := m[key]
	return ok
}

// -- an in-memory storage of the spec's series ---------------------------------------------

type memSeries struct {
	lbls    labels.Labels
	samples []chunks.Sample
}

type memDB struct{ series []memSeries }

func loadSeries(s spec, step time.Duration) (*memDB, error) {
	db := &memDB{}
	for _, in := range s.Series {
		lbls, values, err := promqlParser.ParseSeriesDesc(in.Series + " " + in.Values)
		if err != nil {
			return nil, fmt.Errorf("series %s %s: %w", in.Series, in.Values, err)
		}
		var samples []chunks.Sample
		for i, v := range values {
			if v.Omitted {
				continue
			}
			f := v.Value
			if math.IsNaN(f) && value.IsStaleNaN(f) {
				f = math.Float64frombits(value.StaleNaN)
			}
			ts := time.Duration(i) * step
			samples = append(samples, sample{t: ts.Milliseconds(), f: f})
		}
		db.series = append(db.series, memSeries{lbls: lbls, samples: samples})
	}
	return db, nil
}

func (db *memDB) Querier(mint, maxt int64) (storage.Querier, error) {
	return &memQuerier{db: db, mint: mint, maxt: maxt}, nil
}

type memQuerier struct {
	db         *memDB
	mint, maxt int64
}

func (q *memQuerier) Select(_ context.Context, _ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	var out []storage.Series
	for _, s := range q.db.series {
		if !matches(s.lbls, ms) {
			continue
		}
		var in []chunks.Sample
		for _, smp := range s.samples {
			if smp.T() >= q.mint && smp.T() <= q.maxt {
				in = append(in, smp)
			}
		}
		if len(in) > 0 {
			out = append(out, storage.NewListSeries(s.lbls, in))
		}
	}
	slices.SortFunc(out, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	return &listSet{series: out, i: -1}
}

func matches(lbls labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches(lbls.Get(m.Name)) {
			return false
		}
	}
	return true
}

func (*memQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (*memQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (*memQuerier) Close() error { return nil }

type listSet struct {
	series []storage.Series
	i      int
}

func (s *listSet) Next() bool                      { s.i++; return s.i < len(s.series) }
func (s *listSet) At() storage.Series              { return s.series[s.i] }
func (*listSet) Err() error                        { return nil }
func (*listSet) Warnings() annotations.Annotations { return nil }

type sample struct {
	t int64
	f float64
}

func (s sample) T() int64                      { return s.t }
func (s sample) F() float64                    { return s.f }
func (s sample) H() *histogram.Histogram       { return nil }
func (s sample) FH() *histogram.FloatHistogram { return nil }
func (s sample) ST() int64                     { return 0 }
func (s sample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s sample) Copy() chunks.Sample           { return s }
