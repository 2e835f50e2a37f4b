package handlers

import (
	"context"
	"log/slog"
	"slices"
)

type logAttrsKey struct{}

// WithLogAttrs returns a context whose log records, made through a handler wrapped by
// NewContextLogHandler, carry attrs: the edge puts an event's id and trace context there, so
// the logs of every step the event causes, deep in the use cases, name it.
func WithLogAttrs(ctx context.Context, attrs ...slog.Attr) context.Context {
	prev, _ := ctx.Value(logAttrsKey{}).([]slog.Attr)
	return context.WithValue(ctx, logAttrsKey{}, append(slices.Clip(prev), attrs...))
}

// NewContextLogHandler wraps h so that each record logged with a context (InfoContext…) gets
// the attributes WithLogAttrs put in that context.
func NewContextLogHandler(h slog.Handler) slog.Handler { return contextLogHandler{h} }

type contextLogHandler struct{ slog.Handler }

func (h contextLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if attrs, _ := ctx.Value(logAttrsKey{}).([]slog.Attr); len(attrs) > 0 {
		r = r.Clone()
		r.AddAttrs(attrs...)
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextLogHandler{h.Handler.WithAttrs(attrs)}
}

func (h contextLogHandler) WithGroup(name string) slog.Handler {
	return contextLogHandler{h.Handler.WithGroup(name)}
}
