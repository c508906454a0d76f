{{/* Names: `<release>-lbctl` unless the release name already contains "lbctl"; 52 characters leave room
     for the longest suffix ("-controller") under the 63-character limit of names and label values. */}}
{{- define "lbctl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "lbctl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "lbctl.controller" -}}{{ include "lbctl.fullname" . }}-controller{{- end -}}
{{- define "lbctl.speaker" -}}{{ include "lbctl.fullname" . }}-speaker{{- end -}}

{{- define "lbctl.heartbeatSecret" -}}
{{- .Values.speaker.heartbeat.existingSecret | default (printf "%s-heartbeat" (include "lbctl.fullname" .)) -}}
{{- end -}}

{{- define "lbctl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "lbctl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include with (list $ "controller"). Immutable once installed. */}}
{{- define "lbctl.selectorLabels" -}}
{{- $top := index . 0 -}}
app.kubernetes.io/name: {{ include "lbctl.name" $top }}
app.kubernetes.io/instance: {{ $top.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "lbctl.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Rules the schema cannot express. */}}
{{- define "lbctl.validate" -}}
{{- $hb := .Values.speaker.heartbeat -}}
{{- /* The speaker's --timing presets (lbctl/core/heartbeat.py TIMING_PRESETS): check what it will run with. */ -}}
{{- $preset := get (dict "default" (list 0.1 0.45) "fast" (list 0.1 0.3) "relaxed" (list 0.25 1.0)) ($hb.timing | default "default") -}}
{{- $interval := ternary (index $preset 0) $hb.interval (kindIs "invalid" $hb.interval) -}}
{{- $deadAfter := ternary (index $preset 1) $hb.deadAfter (kindIs "invalid" $hb.deadAfter) -}}
{{- if le (float64 $deadAfter) (float64 $interval) -}}
{{- fail (printf "speaker.heartbeat.deadAfter (%v) must be greater than speaker.heartbeat.interval (%v)" $deadAfter $interval) -}}
{{- end -}}
{{- $le := .Values.controller.leaderElection -}}
{{- if or (le (float64 $le.leaseDuration) (float64 $le.renewDeadline)) (le (float64 $le.renewDeadline) (float64 $le.retryPeriod)) -}}
{{- fail (printf "controller.leaderElection: leaseDuration (%v) > renewDeadline (%v) > retryPeriod (%v) is required" $le.leaseDuration $le.renewDeadline $le.retryPeriod) -}}
{{- end -}}
{{- $seen := dict -}}
{{- range .Values.pools -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "pools: the name %q is used twice" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- end -}}
