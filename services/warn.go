package services

import "time"

// warnWindow is how often one kind of warning about a service may reach the console: a
// stranger flooding the notify socket (mode 0666) must not flood the serial console too.
const warnWindow = 10 * time.Second

// warnKind is one kind of warning in its window: the first was logged, more were counted.
type warnKind struct {
	msg   string
	until time.Time
	more  int
}

// warn logs msg unless one of its kind was logged within warnWindow; then it is counted, and
// the count is reported when the window ends (flushWarnings, from the loop's timer).
func (s *Service) warn(kind, msg string, args ...any) {
	now := time.Now()
	if k := s.st.warns[kind]; k != nil && now.Before(k.until) {
		k.more++
		return
	}
	if s.st.warns == nil {
		s.st.warns = map[string]*warnKind{}
	}
	s.st.warns[kind] = &warnKind{msg: msg, until: now.Add(warnWindow)}
	s.log.Warn(msg, args...)
}

func (s *Service) flushWarnings(now time.Time) {
	for kind, k := range s.st.warns {
		if now.Before(k.until) {
			continue
		}
		if k.more > 0 {
			s.log.Warn(k.msg, "and_more", k.more, "in_last", warnWindow)
		}
		delete(s.st.warns, kind)
	}
}

// nextWarnFlush is when a counted warning is due to be reported; zero for none.
func (s *Service) nextWarnFlush() time.Time {
	var t time.Time
	for _, k := range s.st.warns {
		if k.more > 0 && (t.IsZero() || k.until.Before(t)) {
			t = k.until
		}
	}
	return t
}
