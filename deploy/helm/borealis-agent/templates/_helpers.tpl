{{/* The chart's name, or nameOverride. */}}
{{- define "borealis-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource names: the release and the chart's name, or fullnameOverride. */}}
{{- define "borealis-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "borealis-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "borealis-agent.labels" -}}
helm.sh/chart: {{ include "borealis-agent.chart" . }}
{{ include "borealis-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select this release's pods. */}}
{{- define "borealis-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "borealis-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "borealis-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "borealis-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "borealis-agent.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the credential: the user's, or the one the chart makes. */}}
{{- define "borealis-agent.credentialsSecretName" -}}
{{- default (printf "%s-credentials" (include "borealis-agent.fullname" .)) .Values.credentials.existingSecret }}
{{- end }}

{{- define "borealis-agent.credentialsIdKey" -}}
{{- if .Values.credentials.existingSecret }}{{ .Values.credentials.clientIdKey }}{{ else }}client-id{{ end }}
{{- end }}

{{- define "borealis-agent.credentialsSecretKey" -}}
{{- if .Values.credentials.existingSecret }}{{ .Values.credentials.clientSecretKey }}{{ else }}client-secret{{ end }}
{{- end }}

{{/*
Fails with a message saying what is wrong with the values; the schema checks
types, this checks what depends on several values.
*/}}
{{- define "borealis-agent.validate" -}}
{{- $v := .Values }}
{{- if not $v.relay.url }}
{{- fail "borealis-agent: relay.url is required: the relay's agents' listener, e.g. --set relay.url=https://relay.example.com:9090" }}
{{- end }}
{{- if $v.credentials.existingSecret }}
{{- if $v.credentials.clientSecret }}
{{- fail "borealis-agent: give credentials.existingSecret or credentials.clientSecret, not both" }}
{{- end }}
{{- else }}
{{- if not (and $v.credentials.clientId $v.credentials.clientSecret) }}
{{- fail "borealis-agent: the agent's credential is required: credentials.existingSecret (a Secret with the keys credentials.clientIdKey and credentials.clientSecretKey), or credentials.clientId and credentials.clientSecret" }}
{{- end }}
{{- end }}
{{- if and (not $v.allow) (not $v.allowAny) }}
{{- fail "borealis-agent: the agent forwards only to what allow names: give allow (host, host:port, *.domain, CIDR) or set allowAny=true" }}
{{- end }}
{{- if and $v.relay.ca.secretName $v.relay.ca.configMapName }}
{{- fail "borealis-agent: give relay.ca.secretName or relay.ca.configMapName, not both" }}
{{- end }}
{{- if and (ne (toString $v.podDisruptionBudget.minAvailable) "") (ne (toString $v.podDisruptionBudget.maxUnavailable) "") }}
{{- fail "borealis-agent: give podDisruptionBudget.minAvailable or podDisruptionBudget.maxUnavailable, not both" }}
{{- end }}
{{- $grace := include "borealis-agent.durationSeconds" $v.shutdownGrace | atoi }}
{{- if and $v.terminationGracePeriodSeconds (le (int $v.terminationGracePeriodSeconds) $grace) }}
{{- fail (printf "borealis-agent: terminationGracePeriodSeconds (%d) must exceed shutdownGrace (%s = %ds), or the kubelet kills requests the agent is still finishing; 0 computes it" (int $v.terminationGracePeriodSeconds) $v.shutdownGrace $grace) }}
{{- end }}
{{- end }}

{{/*
Seconds in a duration as the agent reads it ("30s", "1m30s", "1m 5s", "500ms"),
rounded up.
*/}}
{{- define "borealis-agent.durationSeconds" -}}
{{- $ms := 0 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d)" (toString .) -1 }}
{{- $n := regexFind "^[0-9]+" . | int }}
{{- $unit := regexReplaceAll "^[0-9]+" . "" }}
{{- $scale := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000) $unit }}
{{- $ms = add $ms (mul $n $scale) }}
{{- end }}
{{- div (add $ms 999) 1000 }}
{{- end }}

{{/* The termination grace period: the value, or shutdownGrace + 15 s. */}}
{{- define "borealis-agent.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- else }}
{{- add (include "borealis-agent.durationSeconds" .Values.shutdownGrace | int) 15 }}
{{- end }}
{{- end }}

{{/* Topology spread constraints: the user's, else the default when replicaCount > 1. */}}
{{- define "borealis-agent.topologySpreadConstraints" -}}
{{- $selector := dict "matchLabels" (include "borealis-agent.selectorLabels" . | fromYaml) }}
{{- if .Values.topologySpreadConstraints }}
{{- $out := list }}
{{- range .Values.topologySpreadConstraints }}
{{- $out = append $out (merge (deepCopy .) (dict "labelSelector" $selector)) }}
{{- end }}
{{- toYaml $out }}
{{- else if and (gt (int .Values.replicaCount) 1) .Values.defaultTopologySpread.enabled }}
{{- $d := .Values.defaultTopologySpread }}
{{- toYaml (list (dict "maxSkew" (int $d.maxSkew) "topologyKey" $d.topologyKey "whenUnsatisfiable" $d.whenUnsatisfiable "labelSelector" $selector)) }}
{{- end }}
{{- end }}

{{/* Affinity: the user's, else anti-affinity between this release's pods when replicaCount > 1. */}}
{{- define "borealis-agent.affinity" -}}
{{- if .Values.affinity }}
{{- toYaml .Values.affinity }}
{{- else if and (gt (int .Values.replicaCount) 1) (ne .Values.podAntiAffinity "none") }}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "borealis-agent.selectorLabels" . | fromYaml)) }}
{{- if eq .Values.podAntiAffinity "hard" }}
{{- toYaml (dict "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term))) }}
{{- else }}
{{- toYaml (dict "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term)))) }}
{{- end }}
{{- end }}
{{- end }}
