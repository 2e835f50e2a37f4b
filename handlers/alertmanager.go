package handlers

import (
	"fmt"

	"github.com/siskin-dev/siskin/functions"
)

// DecodeAlertmanager reads an Alertmanager webhook notification (version "4"). Unknown members
// are tolerated (Alertmanager adds some, such as notification_reason in 0.32 and routeLabels
// in 0.34); a known member of the wrong type, another version, or a payload templated into
// another shape is an error wrapping functions.ErrInvalid that names the field.
func DecodeAlertmanager(body []byte) (functions.AlertNotification, error) {
	root, err := parseJSON(body, "")
	if err != nil {
		return functions.AlertNotification{}, err
	}
	n := alertNotification(root)
	if err := root.err(); err != nil {
		return functions.AlertNotification{}, fmt.Errorf("alertmanager notification: %w", err)
	}
	return n, nil
}

func alertNotification(root jsonNode) functions.AlertNotification {
	root.object()
	version := root.get("version")
	if !version.present() {
		version.fail("missing, want \"4\"")
	} else if v := version.str(); v != "4" {
		version.fail("got %s, want \"4\"", quote(v))
	}
	n := functions.AlertNotification{
		Receiver:          root.get("receiver").str(),
		Status:            root.get("status").oneOf("firing", "resolved"),
		GroupKey:          root.get("groupKey").str(),
		GroupLabels:       root.get("groupLabels").stringMap(),
		CommonLabels:      root.get("commonLabels").stringMap(),
		CommonAnnotations: root.get("commonAnnotations").stringMap(),
		ExternalURL:       root.get("externalURL").str(),
	}
	root.get("truncatedAlerts").count()
	alerts := root.get("alerts")
	if !alerts.present() {
		alerts.fail("missing, want an array of alerts")
	}
	items := alerts.items()
	n.Alerts = make([]functions.Alert, 0, len(items))
	for _, a := range items {
		a.object()
		labels := a.get("labels")
		if !labels.present() {
			labels.fail("missing, want an object")
		}
		n.Alerts = append(n.Alerts, functions.Alert{
			Status:       a.get("status").oneOf("firing", "resolved"),
			Labels:       labels.stringMap(),
			Annotations:  a.get("annotations").stringMap(),
			StartsAt:     a.get("startsAt").time(),
			EndsAt:       a.get("endsAt").time(),
			GeneratorURL: a.get("generatorURL").str(),
			Fingerprint:  a.get("fingerprint").str(),
		})
	}
	return n
}
