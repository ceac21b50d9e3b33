package mapping

import (
	"math"

	json "github.com/segmentio/encoding/json"
)

// Polls (MSC3381), with the stable names (m.poll.start, the m.poll block,
// m.text, m.selections) and the unstable ones clients such as Element send
// today (org.matrix.msc3381.poll.*, org.matrix.msc1767.text).

// maxPollAnswers is where MSC3381 truncates a poll's answers.
const maxPollAnswers = 20

// extensibleText is an MSC1767 text: m.text as a list of representations
// (stable) or a string (an earlier draft), org.matrix.msc1767.text
// (unstable), or a plain body.
type extensibleText struct {
	Text         json.RawMessage `json:"m.text"`
	UnstableText string          `json:"org.matrix.msc1767.text"`
	Body         string          `json:"body"`
}

// text returns the plain text, "" when there is none.
func (t *extensibleText) text() string {
	if t.UnstableText != "" {
		return t.UnstableText
	}
	var s string
	if json.Unmarshal(t.Text, &s) == nil && s != "" {
		return s
	}
	var list []struct {
		MimeType string `json:"mimetype"`
		Body     string `json:"body"`
	}
	if json.Unmarshal(t.Text, &list) == nil {
		for _, r := range list {
			if r.MimeType == "" || r.MimeType == "text/plain" {
				return r.Body
			}
		}
	}
	return t.Body
}

type pollBlock struct {
	Kind          string         `json:"kind"`
	MaxSelections *float64       `json:"max_selections"`
	Question      extensibleText `json:"question"`
	Answers       []struct {
		ID         string `json:"m.id"`
		UnstableID string `json:"id"`
		extensibleText
	} `json:"answers"`
}

func (m *Mapper) mapPollStart(dto *DTO, raw *rawEvent) bool {
	var c struct {
		Poll         *pollBlock `json:"m.poll"`
		UnstablePoll *pollBlock `json:"org.matrix.msc3381.poll.start"`
		RelatesTo    *relation  `json:"m.relates_to"`
		extensibleText
	}
	if json.Unmarshal(raw.Content, &c) != nil {
		return false
	}
	poll := c.Poll
	if poll == nil {
		poll = c.UnstablePoll
	}
	if poll == nil {
		return false
	}
	answers := []map[string]any{}
	for _, a := range poll.Answers {
		answerID := a.ID
		if answerID == "" {
			answerID = a.UnstableID
		}
		if answerID != "" && len(answers) < maxPollAnswers {
			answers = append(answers, map[string]any{"id": answerID, "text": a.text()})
		}
	}
	if len(answers) == 0 {
		return false // nothing to vote for: clients do not show it as a poll
	}
	maxSelections := 1
	if v := poll.MaxSelections; v != nil && *v >= 1 {
		maxSelections = int(math.Min(*v, maxPollAnswers))
	}
	kind := "undisclosed" // what MSC3381 tells clients to assume for a kind they do not know
	switch poll.Kind {
	case "m.disclosed", "org.matrix.msc3381.poll.disclosed", "m.poll.disclosed":
		kind = "disclosed"
	}
	question := poll.Question.text()
	dto.Type = PollStarted
	dto.Data = map[string]any{"question": question, "preview": Preview(question), "answers": answers,
		"kind": kind, "max_selections": maxSelections, "body": c.text()}
	if rel := c.RelatesTo; rel != nil && rel.RelType == "m.thread" && rel.EventID != "" {
		dto.Data["thread_root_event_id"] = rel.EventID
	}
	return true
}

// pollReference is the poll start event a response or an end refers to.
func pollReference(rel *relation) string {
	if rel == nil || rel.RelType != "m.reference" {
		return ""
	}
	return rel.EventID
}

func (m *Mapper) mapPollResponse(dto *DTO, raw *rawEvent) bool {
	var c struct {
		RelatesTo        *relation `json:"m.relates_to"`
		Selections       []string  `json:"m.selections"`
		UnstableResponse *struct {
			Answers []string `json:"answers"`
		} `json:"org.matrix.msc3381.poll.response"`
	}
	if json.Unmarshal(raw.Content, &c) != nil {
		return false
	}
	poll := pollReference(c.RelatesTo)
	if poll == "" {
		return false
	}
	// No selection (or none given) withdraws the sender's vote.
	answers := c.Selections
	if answers == nil && c.UnstableResponse != nil {
		answers = c.UnstableResponse.Answers
	}
	if answers == nil {
		answers = []string{}
	}
	dto.Type = PollAnswered
	dto.Data = map[string]any{"poll_event_id": poll, "answers": answers}
	return true
}

func (m *Mapper) mapPollEnd(dto *DTO, raw *rawEvent) bool {
	var c struct {
		RelatesTo *relation          `json:"m.relates_to"`
		Results   map[string]float64 `json:"m.poll.results"`
		extensibleText
	}
	if json.Unmarshal(raw.Content, &c) != nil {
		return false
	}
	poll := pollReference(c.RelatesTo)
	if poll == "" {
		return false
	}
	dto.Type = PollEnded
	dto.Data = map[string]any{"poll_event_id": poll, "body": c.text()}
	if c.Results != nil {
		results := map[string]int64{}
		for answerID, n := range c.Results {
			if n >= 0 && n <= math.MaxInt32 && n == math.Trunc(n) {
				results[answerID] = int64(n)
			}
		}
		dto.Data["results"] = results
	}
	return true
}
