package httpapi

import (
	"net/http"
	"strconv"

	"github.com/dmonitor/dmonitor/tsdb"
)

// defaultSuggestMax is OpenTSDB's default for max.
const defaultSuggestMax = 25

// serveSuggest answers /api/suggest: type (metrics, tagk or tagv), q (a
// prefix, default all) and max (default 25), from the query string or a
// JSON body.
func (h *handler) serveSuggest(w http.ResponseWriter, r *http.Request) error {
	if h.suggester == nil {
		return &apiError{code: http.StatusNotImplemented, msg: "Suggestions are not implemented", details: "this store cannot list its names"}
	}
	var req struct {
		Type string `json:"type"`
		Q    string `json:"q"`
		Max  *int   `json:"max"`
	}
	if r.Method == http.MethodPost {
		if err := h.decodeBody(w, r, &req); err != nil {
			return err
		}
	} else {
		q := r.URL.Query()
		req.Type, req.Q = q.Get("type"), q.Get("q")
		if m := q.Get("max"); m != "" {
			n, err := strconv.Atoi(m)
			if err != nil {
				return badRequest("Invalid 'max' parameter", "max must be an integer: "+m)
			}
			req.Max = &n
		}
	}
	if req.Type == "" {
		return badRequest("Missing 'type' parameter", "type must be metrics, tagk or tagv")
	}
	switch req.Type {
	case tsdb.SuggestMetrics, tsdb.SuggestTagKeys, tsdb.SuggestTagValues:
	default:
		return badRequest("Invalid 'type' parameter:"+req.Type, "type must be metrics, tagk or tagv")
	}
	limit := defaultSuggestMax
	if req.Max != nil {
		if *req.Max <= 0 {
			return badRequest("Invalid 'max' parameter", "max must be a positive integer")
		}
		limit = *req.Max
	}
	names, err := h.suggester.Suggest(r.Context(), req.Type, req.Q, limit)
	if err != nil {
		return err
	}
	if names == nil {
		names = []string{}
	}
	writeJSON(w, http.StatusOK, names)
	return nil
}
