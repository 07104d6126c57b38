package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// annotationBody is an annotation as a request carries it; nil fields
// were not given, which matters to POST (it changes only the fields given).
type annotationBody struct {
	StartTime   json.RawMessage    `json:"startTime"`
	EndTime     json.RawMessage    `json:"endTime"`
	TSUID       string             `json:"tsuid"`
	Description *string            `json:"description"`
	Notes       *string            `json:"notes"`
	Custom      *map[string]string `json:"custom"`
}

// annotationTime reads an annotation time: Unix seconds, or milliseconds
// (more than 10 digits), which are truncated to the second as OpenTSDB
// keeps them. Zero or absent is the zero time.
func annotationTime(raw json.RawMessage) (time.Time, error) {
	s := unquote(raw)
	if s == "" || s == "null" || s == "0" {
		return time.Time{}, nil
	}
	if !isDigits(s) {
		return time.Time{}, fmt.Errorf("%q is not a Unix timestamp", s)
	}
	t, err := parseTime(s, time.Time{}, time.UTC)
	return t.Truncate(time.Second), err
}

// annotationFromQuery reads the query-string form: start_time, end_time,
// tsuid, description, notes.
func annotationFromQuery(r *http.Request) annotationBody {
	q := r.URL.Query()
	b := annotationBody{TSUID: q.Get("tsuid")}
	if v := q.Get("start_time"); v != "" {
		b.StartTime = json.RawMessage(fmt.Sprintf("%q", v))
	}
	if v := q.Get("end_time"); v != "" {
		b.EndTime = json.RawMessage(fmt.Sprintf("%q", v))
	}
	if q.Has("description") {
		d := q.Get("description")
		b.Description = &d
	}
	if q.Has("notes") {
		n := q.Get("notes")
		b.Notes = &n
	}
	return b
}

// serveAnnotation answers /api/annotation: GET reads one annotation (by
// start_time and tsuid), POST creates or updates the fields given, PUT
// replaces the whole annotation, DELETE removes it (204).
func (h *handler) serveAnnotation(w http.ResponseWriter, r *http.Request) error {
	if h.annotator == nil {
		return &apiError{code: http.StatusNotImplemented, msg: "Annotations are not implemented", details: "this store keeps no annotations"}
	}
	b := annotationFromQuery(r)
	if r.Method != http.MethodGet {
		body, err := h.readBody(w, r)
		if err != nil {
			return err
		}
		// OpenTSDB takes the query string when there is no body.
		if len(body) > 0 {
			b = annotationBody{}
			if err := decodeJSON(body, &b); err != nil {
				return err
			}
		}
	}
	start, err := annotationTime(b.StartTime)
	if err != nil {
		return badRequest("Invalid start time", err.Error())
	}
	if start.IsZero() {
		return badRequest("Missing start time", "Supply startTime (GET: start_time) in Unix seconds")
	}
	ctx := r.Context()
	switch r.Method {
	case http.MethodGet:
		a, err := h.getAnnotation(ctx, b.TSUID, start)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, a)
		return nil
	case http.MethodDelete:
		if err := h.annotator.DeleteAnnotation(ctx, b.TSUID, start); err != nil {
			if errors.Is(err, tsdb.ErrNotFound) {
				return notFoundAnnotation(b.TSUID, start)
			}
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	a, err := h.storeAnnotation(ctx, b, start, r.Method == http.MethodPost)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func notFoundAnnotation(tsuid string, start time.Time) *apiError {
	return &apiError{code: http.StatusNotFound, msg: "Unable to locate annotation in storage",
		details: fmt.Sprintf("no annotation with tsuid %q and start time %d", tsuid, start.Unix())}
}

// getAnnotation returns the annotation of tsuid starting at start.
func (h *handler) getAnnotation(ctx context.Context, tsuid string, start time.Time) (tsdb.Annotation, error) {
	as, err := h.annotator.Annotations(ctx, tsuid, start, start)
	if err != nil {
		return tsdb.Annotation{}, err
	}
	for _, a := range as {
		if a.Start.Unix() == start.Unix() {
			return a, nil
		}
	}
	return tsdb.Annotation{}, notFoundAnnotation(tsuid, start)
}

// storeAnnotation writes b. With merge (POST), the fields b does not give
// keep the stored annotation's values.
func (h *handler) storeAnnotation(ctx context.Context, b annotationBody, start time.Time, merge bool) (tsdb.Annotation, error) {
	a := tsdb.Annotation{Start: start, TSUID: b.TSUID}
	if merge {
		old, err := h.getAnnotation(ctx, b.TSUID, start)
		var ae *apiError
		switch {
		case err == nil:
			a = old
		case errors.As(err, &ae) && ae.code == http.StatusNotFound:
		default:
			return a, err
		}
	}
	if b.EndTime != nil || !merge {
		end, err := annotationTime(b.EndTime)
		if err != nil {
			return a, badRequest("Invalid end time", err.Error())
		}
		a.End = end
	}
	if !a.End.IsZero() && a.End.Before(a.Start) {
		return a, badRequest("Invalid end time", "endTime is before startTime")
	}
	if b.Description != nil || !merge {
		a.Description = deref(b.Description)
	}
	if b.Notes != nil || !merge {
		a.Notes = deref(b.Notes)
	}
	if b.Custom != nil || !merge {
		a.Custom = nil
		if b.Custom != nil {
			a.Custom = *b.Custom
		}
	}
	if err := h.annotator.PutAnnotation(ctx, a); err != nil {
		return a, err
	}
	return a, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// bulkDelete is the body of a DELETE to /api/annotation/bulk.
type bulkDelete struct {
	TSUIDs       []string        `json:"tsuids"`
	Global       flexBool        `json:"global"`
	StartTime    json.RawMessage `json:"startTime"`
	EndTime      json.RawMessage `json:"endTime"`
	TotalDeleted int             `json:"totalDeleted"`
}

// serveAnnotationBulk answers /api/annotation/bulk: POST and PUT store an
// array of annotations (each replaced whole) and answer them; DELETE
// removes the annotations of the tsuids given (and the global ones with
// global) that start in [startTime, endTime], answering the count.
func (h *handler) serveAnnotationBulk(w http.ResponseWriter, r *http.Request) error {
	if h.annotator == nil {
		return &apiError{code: http.StatusNotImplemented, msg: "Annotations are not implemented", details: "this store keeps no annotations"}
	}
	body, err := h.readBody(w, r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if r.Method == http.MethodDelete {
		var d bulkDelete
		if err := decodeJSON(body, &d); err != nil {
			return err
		}
		start, err := annotationTime(d.StartTime)
		if err != nil || start.IsZero() {
			return badRequest("Missing start time", "Supply startTime in Unix seconds")
		}
		end := h.now()
		if t, err := annotationTime(d.EndTime); err != nil {
			return badRequest("Invalid end time", err.Error())
		} else if !t.IsZero() {
			end = t
		}
		ids := slices.Clone(d.TSUIDs)
		if d.Global {
			ids = append(ids, "")
		}
		if len(ids) == 0 {
			return badRequest("Missing tsuids", "Supply tsuids, or global: true")
		}
		for _, id := range ids {
			as, err := h.annotator.Annotations(ctx, id, start, end)
			if err != nil {
				return err
			}
			for _, a := range as {
				if a.Start.Before(start) {
					continue // spans into the range but starts before it
				}
				if err := h.annotator.DeleteAnnotation(ctx, id, a.Start); err != nil && !errors.Is(err, tsdb.ErrNotFound) {
					return err
				}
				d.TotalDeleted++
			}
		}
		writeJSON(w, http.StatusOK, d)
		return nil
	}
	var bs []annotationBody
	if err := decodeJSON(body, &bs); err != nil {
		return err
	}
	out := make([]tsdb.Annotation, 0, len(bs))
	for i, b := range bs {
		start, err := annotationTime(b.StartTime)
		if err != nil || start.IsZero() {
			return badRequest("Missing start time", fmt.Sprintf("annotation %d has no valid startTime", i))
		}
		a, err := h.storeAnnotation(ctx, b, start, false)
		if err != nil {
			return err
		}
		out = append(out, a)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
