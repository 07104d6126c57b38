package leader

import (
	"context"
	"fmt"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/config"
)

// NoLeaderRule is the alert a node that does not lead raises when no node
// has led for longer than the lease allows: nobody evaluates the rules,
// so nothing else would page. Its instance's host is the node that says
// so, its check "leader". Every such node says it, through its own
// Fallback sender: duplicates rather than silence.
const NoLeaderRule = "no-leader"

// watch raises NoLeaderRule through the fallback sender while no node has
// held the lease for longer than after, and resolves it once one does,
// until ctx is done. It needs a lease that can say who holds it; without
// one (a single node, peers electing the live node named first) some node
// always leads.
func (l *Leader) watch(ctx context.Context, fallback Sender, after time.Duration) {
	lr, ok := l.lease.(leaderReporter)
	if !ok || fallback == nil {
		return
	}
	inst := alerting.Instance{Rule: NoLeaderRule, Labels: map[string]string{
		alerting.LabelHost: l.cfg.Observer, alerting.LabelCheck: "leader", alerting.LabelSeverity: "critical"}}
	var since time.Time // when no node was seen leading first; zero while one is
	t := time.NewTicker(l.evalEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := l.now()
		l.mu.Lock()
		leading := l.epoch > 0
		l.mu.Unlock()
		owner, why := "", ""
		if !leading {
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			var err error
			owner, _, _, err = lr.Leader(qctx)
			cancel()
			if err != nil {
				why = err.Error()
			}
		}
		switch {
		case leading || owner != "":
			since = time.Time{}
		case since.IsZero():
			since = now
		}
		in := alerting.Input{Active: !since.IsZero() && now.Sub(since) > after}
		if in.Active {
			summary := fmt.Sprintf("no node has led since %s: nobody evaluates the rules", since.UTC().Format(time.RFC3339))
			if why != "" {
				summary += "; the lease cannot be read: " + why
			}
			in.Annotations = map[string]string{alerting.AnnotationSummary: summary}
		}
		next, tr := inst.Next(now, in, alerting.Params{})
		inst = next
		if tr == nil || tr.Notification == nil {
			continue
		}
		l.log.Warn("no leader", "status", tr.Notification.Status, "since", since)
		if err := fallback.Send(config.DefaultReceiver, *tr.Notification); err != nil {
			l.log.Error("queue no-leader notification", "id", tr.Notification.ID, "err", err)
		}
	}
}
