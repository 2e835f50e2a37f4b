package analysis

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/siskin-dev/siskin/functions"
)

// The notification formats. slack, discord, rocket, msteams and gchat have the bodies of
// Flagger's notifiers (pkg/notifier); webhook is Siskin's own.
const (
	NotifierSlack   = "slack"
	NotifierDiscord = "discord"
	NotifierRocket  = "rocket"
	NotifierMSTeams = "msteams"
	NotifierGChat   = "gchat"
	NotifierWebhook = "webhook"
)

// notification is one alert for one receiver.
type notification struct {
	name, namespace string
	severity        functions.Severity
	message         string
	fields          []field
	at              time.Time
}

type field struct{ name, value string }

// receiver is where a notification goes: an AlertProvider resolved, or the global notifier.
type receiver struct {
	kind     string
	address  string
	token    string
	username string
	channel  string
	proxy    string
}

// encode renders the notification for the receiver's kind and returns the URL to POST it to.
func encode(r receiver, n notification) (target string, body []byte, err error) {
	u, err := url.ParseRequestURI(r.address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", nil, fmt.Errorf("%w: %s address is not an http(s) URL", functions.ErrInvalid, r.kind)
	}
	var v any
	switch r.kind {
	case NotifierSlack:
		v = slackBody(r, escapeSlack(n), "good", "danger")
	case NotifierRocket:
		v = slackBody(r, n, "#0076D7", "#FF0000")
	case NotifierDiscord:
		// Discord takes Slack's format on the webhook URL + /slack.
		if !strings.HasSuffix(u.Path, "/slack") {
			u.Path = path.Join(u.Path, "slack")
		}
		v = slackBody(r, n, "good", "danger")
	case NotifierMSTeams:
		v = teamsBody(n)
	case NotifierGChat:
		v = gchatBody(n)
	case NotifierWebhook:
		v = webhookBody(n)
	default:
		return "", nil, fmt.Errorf("%w: provider %q not supported", functions.ErrInvalid, r.kind)
	}
	body, err = json.Marshal(v)
	if err != nil {
		return "", nil, fmt.Errorf("encode %s notification: %w", r.kind, err)
	}
	return u.String(), body, nil
}

func (n notification) subject() string { return n.name + "." + n.namespace }

// escapeSlack escapes &, < and > in everything Slack reads as mrkdwn, as Slack asks: a
// message carries text from users (an abort's reason, alert names, a canary's message), and
// "<!channel>" or "<https://evil|click>" in it must come out as text, not a mention or a link.
func escapeSlack(n notification) notification {
	esc := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace
	n.name, n.namespace, n.message = esc(n.name), esc(n.namespace), esc(n.message)
	fields := make([]field, len(n.fields))
	for i, f := range n.fields {
		fields[i] = field{name: esc(f.name), value: esc(f.value)}
	}
	n.fields = fields
	return n
}

type slackMessage struct {
	Channel     string            `json:"channel"`
	Username    string            `json:"username"`
	IconURL     string            `json:"icon_url"`
	IconEmoji   string            `json:"icon_emoji"`
	Attachments []slackAttachment `json:"attachments"`
}

type slackAttachment struct {
	Color      string       `json:"color"`
	AuthorName string       `json:"author_name"`
	Text       string       `json:"text"`
	MrkdwnIn   []string     `json:"mrkdwn_in"`
	Fields     []slackField `json:"fields"`
}

type slackField struct {
	Title string `json:"title"`
	Value string `json:"value"`
	Short bool   `json:"short"`
}

func slackBody(r receiver, n notification, color, errorColor string) slackMessage {
	if n.severity == functions.SeverityError {
		color = errorColor
	}
	fields := make([]slackField, 0, len(n.fields))
	for _, f := range n.fields {
		fields = append(fields, slackField{Title: f.name, Value: f.value})
	}
	return slackMessage{
		Channel:   r.channel,
		Username:  r.username,
		IconEmoji: ":rocket:",
		Attachments: []slackAttachment{{
			Color:      color,
			AuthorName: n.subject(),
			Text:       n.message,
			MrkdwnIn:   []string{"text"},
			Fields:     fields,
		}},
	}
}

// teamsMessage is an Office 365 connector MessageCard.
type teamsMessage struct {
	Type       string         `json:"@type"`
	Context    string         `json:"@context"`
	ThemeColor string         `json:"themeColor"`
	Summary    string         `json:"summary"`
	Sections   []teamsSection `json:"sections"`
}

type teamsSection struct {
	ActivityTitle    string      `json:"activityTitle"`
	ActivitySubtitle string      `json:"activitySubtitle"`
	Facts            []teamsFact `json:"facts"`
}

type teamsFact struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

func teamsBody(n notification) teamsMessage {
	color := "0076D7"
	if n.severity == functions.SeverityError {
		color = "FF0000"
	}
	facts := make([]teamsFact, 0, len(n.fields))
	for _, f := range n.fields {
		facts = append(facts, teamsFact{Name: f.name, Value: f.value})
	}
	return teamsMessage{
		Type:       "MessageCard",
		Context:    "http://schema.org/extensions",
		ThemeColor: color,
		Summary:    n.subject(),
		Sections:   []teamsSection{{ActivityTitle: n.message, ActivitySubtitle: n.subject(), Facts: facts}},
	}
}

// gchatMessage is a Google Chat card (the v1 "cards" format Flagger sends).
type gchatMessage struct {
	Cards []gchatCard `json:"cards"`
}

type gchatCard struct {
	Header   gchatHeader    `json:"header"`
	Sections []gchatSection `json:"sections"`
}

type gchatHeader struct {
	Title    string `json:"title"`
	Subtitle string `json:"subtitle"`
}

type gchatSection struct {
	Widgets []gchatWidget `json:"widgets"`
}

type gchatWidget struct {
	TextParagraph gchatText `json:"textParagraph"`
}

type gchatText struct {
	Text string `json:"text"`
}

func gchatBody(n notification) gchatMessage {
	paragraph := func(s string) gchatSection {
		return gchatSection{Widgets: []gchatWidget{{TextParagraph: gchatText{Text: s}}}}
	}
	sections := []gchatSection{paragraph("<font color=#848484><strong>" + n.message + "</strong></font>")}
	for _, f := range n.fields {
		sections = append(sections, paragraph(f.name+"<br><font color=#848484><strong>"+f.value+"</strong></font>"))
	}
	return gchatMessage{Cards: []gchatCard{{
		Header:   gchatHeader{Title: "Siskin", Subtitle: n.subject()},
		Sections: sections,
	}}}
}

// WebhookAlert is the body Siskin POSTs to an AlertProvider of type "webhook":
//
//	{"name":"podinfo","namespace":"default","severity":"error",
//	 "message":"Canary analysis failed, rolling back.",
//	 "fields":{"Target":"Deployment/podinfo.default","Failed checks threshold":"5",...},
//	 "timestamp":"2026-01-02T15:04:05.123Z"}
//
// fields is always an object (empty without metadata); timestamp is RFC 3339 in UTC.
type WebhookAlert struct {
	Name      string             `json:"name"`
	Namespace string             `json:"namespace"`
	Severity  functions.Severity `json:"severity"`
	Message   string             `json:"message"`
	Fields    map[string]string  `json:"fields"`
	Timestamp string             `json:"timestamp"`
}

func webhookBody(n notification) WebhookAlert {
	fields := make(map[string]string, len(n.fields))
	for _, f := range n.fields {
		fields[f.name] = f.value
	}
	return WebhookAlert{
		Name:      n.name,
		Namespace: n.namespace,
		Severity:  n.severity,
		Message:   n.message,
		Fields:    fields,
		Timestamp: n.at.UTC().Format(time.RFC3339Nano),
	}
}
