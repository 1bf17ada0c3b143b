package tokenserver

import "github.com/prometheus/client_golang/prometheus"

// metrics are the token server's Prometheus metrics:
//
//	berth_auth_tokens_issued_total{grant}          grant: anonymous, basic (GET with Basic credentials), password, refresh_token
//	berth_auth_logins_total{credential, outcome}   credential: password, refresh_token; outcome: success, failure, throttled
//	berth_auth_throttled_total{by}                 logins refused by the throttle, by: account, address
//
// Label values are fixed; user names never become labels.
type metrics struct {
	issued    *prometheus.CounterVec
	logins    *prometheus.CounterVec
	throttled *prometheus.CounterVec
}

// Login outcomes and credentials.
const (
	credPassword = "password"
	credRefresh  = "refresh_token"
	outSuccess   = "success"
	outFailure   = "failure"
	outThrottled = "throttled"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_auth_tokens_issued_total",
			Help: "Access tokens handed out, by how the client asked: anonymous, basic (GET with Basic credentials), password or refresh_token (POST).",
		}, []string{"grant"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_auth_logins_total",
			Help: "Credential checks, by credential (password, refresh_token) and outcome (success, failure, throttled).",
		}, []string{"credential", "outcome"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_auth_throttled_total",
			Help: "Logins refused by the throttle before their password was checked, by what was over its limit (account, address).",
		}, []string{"by"}),
	}
	// Series that should read 0 rather than be absent until the first event.
	for _, g := range []string{"anonymous", "basic", credPassword, credRefresh} {
		m.issued.WithLabelValues(g)
	}
	for _, o := range []string{outSuccess, outFailure, outThrottled} {
		m.logins.WithLabelValues(credPassword, o)
	}
	for _, o := range []string{outSuccess, outFailure} {
		m.logins.WithLabelValues(credRefresh, o)
	}
	for _, by := range []string{"account", "address"} {
		m.throttled.WithLabelValues(by)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.issued, m.logins, m.throttled} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
