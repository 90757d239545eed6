{{/* The chart's name, or nameOverride. */}}
{{- define "borealis-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource names: the release and the chart's name, or fullnameOverride. */}}
{{- define "borealis-relay.fullname" -}}
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

{{- define "borealis-relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "borealis-relay.labels" -}}
helm.sh/chart: {{ include "borealis-relay.chart" . }}
{{ include "borealis-relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select this release's pods. */}}
{{- define "borealis-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "borealis-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "borealis-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "borealis-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "borealis-relay.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Seconds in a duration as the relay reads it ("30s", "1m30s", "1m 5s", "500ms"),
rounded up.
*/}}
{{- define "borealis-relay.durationSeconds" -}}
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
{{- define "borealis-relay.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- else }}
{{- add (include "borealis-relay.durationSeconds" .Values.shutdownGrace | int) 15 }}
{{- end }}
{{- end }}

{{/* Topology spread constraints: the user's, else the default when replicaCount > 1. */}}
{{- define "borealis-relay.topologySpreadConstraints" -}}
{{- $selector := dict "matchLabels" (include "borealis-relay.selectorLabels" . | fromYaml) }}
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
{{- define "borealis-relay.affinity" -}}
{{- if .Values.affinity }}
{{- toYaml .Values.affinity }}
{{- else if and (gt (int .Values.replicaCount) 1) (ne .Values.podAntiAffinity "none") }}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "borealis-relay.selectorLabels" . | fromYaml)) }}
{{- if eq .Values.podAntiAffinity "hard" }}
{{- toYaml (dict "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term))) }}
{{- else }}
{{- toYaml (dict "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term)))) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The database is PostgreSQL (given), else SQLite in the data dir. */}}
{{- define "borealis-relay.hasDatabase" -}}
{{- if or .Values.database.existingSecret .Values.database.url }}true{{ end }}
{{- end }}

{{/* The data dir lives on a claim (SQLite with persistence), else on an emptyDir. */}}
{{- define "borealis-relay.claimName" -}}
{{- if and .Values.persistence.enabled (not (include "borealis-relay.hasDatabase" .)) }}
{{- default (printf "%s-data" (include "borealis-relay.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}
{{- end }}

{{/*
Where each secret comes from. Called with (dict "ctx" $ "item" NAME), NAME one
of secretKey, adminToken, database, oidcClientSecret; gives a YAML map
{source: existing|given|generated, name, key}, or nothing when the relay gets
none (no database, no oidc, the admin token turned off).
*/}}
{{- define "borealis-relay.secretSource" -}}
{{- $v := .ctx.Values }}
{{- $full := include "borealis-relay.fullname" .ctx }}
{{- $src := dict }}
{{- $generate := false }}
{{- if eq .item "secretKey" }}
{{- $src = $v.secretKey }}
{{- $generate = true }}
{{- else if eq .item "adminToken" }}
{{- $src = $v.adminToken }}
{{- $generate = not $v.oidc.disableAdminToken }}
{{- else if eq .item "database" }}
{{- $src = dict "existingSecret" $v.database.existingSecret "key" $v.database.key "value" $v.database.url }}
{{- else if eq .item "oidcClientSecret" }}
{{- $src = $v.oidc.clientSecret }}
{{- end }}
{{- $key := get (dict "secretKey" "secret-key" "adminToken" "admin-token" "database" "database-url" "oidcClientSecret" "oidc-client-secret") .item }}
{{- if $src.existingSecret }}
source: existing
name: {{ $src.existingSecret }}
key: {{ $src.key }}
{{- else if $src.value }}
source: given
name: {{ $full }}
key: {{ $key }}
{{- else if $generate }}
source: generated
name: {{ $full }}-generated
key: {{ $key }}
{{- end }}
{{- end }}

{{/* The Secret of given values: key: value (plain text; the template encodes). */}}
{{- define "borealis-relay.givenSecrets" -}}
{{- $v := .Values }}
{{- $given := dict }}
{{- if and $v.secretKey.value (not $v.secretKey.existingSecret) }}{{ $_ := set $given "secret-key" $v.secretKey.value }}{{ end }}
{{- if and $v.adminToken.value (not $v.adminToken.existingSecret) }}{{ $_ := set $given "admin-token" $v.adminToken.value }}{{ end }}
{{- if and $v.database.url (not $v.database.existingSecret) }}{{ $_ := set $given "database-url" $v.database.url }}{{ end }}
{{- if and $v.oidc.clientSecret.value (not $v.oidc.clientSecret.existingSecret) }}{{ $_ := set $given "oidc-client-secret" $v.oidc.clientSecret.value }}{{ end }}
{{- if $given }}{{ toYaml $given }}{{ end }}
{{- end }}

{{/* Which secrets the chart generates, as a list of their keys in <fullname>-generated. */}}
{{- define "borealis-relay.generatedKeys" -}}
{{- $out := list }}
{{- range list "secretKey" "adminToken" }}
{{- $s := include "borealis-relay.secretSource" (dict "ctx" $ "item" .) | fromYaml }}
{{- if eq (toString $s.source) "generated" }}{{ $out = append $out $s.key }}{{ end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Settings the chart sets from its own values (or that are secrets): refused in
.Values.config, with the value to use instead.
*/}}
{{- define "borealis-relay.managedSettings" -}}
data_dir: the chart's data volume (persistence.*)
listen: the chart (0.0.0.0:8080)
agent_listen: the chart (0.0.0.0:9090)
peer_url: the chart (the pod's IP)
public_url: publicUrl
shutdown_grace: shutdownGrace
log_format: logFormat
trusted_proxies: trustedProxies
database_url: database.existingSecret (a secret)
secret_key: secretKey.existingSecret (a secret)
admin_token: adminToken.existingSecret (a secret)
oidc_client_secret: oidc.clientSecret.existingSecret (a secret)
oidc_client_secret_file: oidc.clientSecret.existingSecret
oidc_issuer: oidc.issuer
oidc_client_id: oidc.clientId
oidc_admin_groups: oidc.adminGroups
oidc_groups_claim: oidc.groupsClaim
oidc_scopes: oidc.scopes
disable_admin_token: oidc.disableAdminToken
{{- end }}

{{/* .Values.config as TOML: one `key = value` line each, keys sorted. */}}
{{- define "borealis-relay.configToml" -}}
{{- $managed := include "borealis-relay.managedSettings" . | fromYaml }}
{{- range $k := keys .Values.config | sortAlpha }}
{{- if hasKey $managed $k }}
{{- fail (printf "borealis-relay: config.%s is not taken here: set %s" $k (get $managed $k)) }}
{{- end }}
{{- $val := get $.Values.config $k }}
{{- if kindIs "slice" $val }}
{{- $items := list }}
{{- range $val }}
{{- if not (kindIs "string" .) }}{{ fail (printf "borealis-relay: config.%s: a list holds strings only" $k) }}{{ end }}
{{- $items = append $items (toJson .) }}
{{- end }}
{{ $k }} = [{{ join ", " $items }}]
{{- else }}
{{ $k }} = {{ include "borealis-relay.tomlScalar" (dict "key" $k "value" $val) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "borealis-relay.tomlScalar" -}}
{{- $x := .value }}
{{- if kindIs "string" $x }}{{ toJson $x }}
{{- else if kindIs "bool" $x }}{{ $x }}
{{- else if or (kindIs "int" $x) (kindIs "int64" $x) }}{{ printf "%d" $x }}
{{- else if and (kindIs "float64" $x) (eq (float64 (int64 $x)) $x) }}{{ printf "%d" (int64 $x) }}
{{- else }}{{ fail (printf "borealis-relay: config.%s must be a string, a whole number, true/false or a list of strings" .key) }}
{{- end }}
{{- end }}

{{/* The public URL: the value, else from the first ingress host. */}}
{{- define "borealis-relay.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.ingress.tls) 0)) (first .Values.ingress.hosts) }}
{{- end }}
{{- end }}

{{/* Fails with a message saying what is wrong with the values. */}}
{{- define "borealis-relay.validate" -}}
{{- $v := .Values }}
{{- $db := include "borealis-relay.hasDatabase" . }}
{{- if and (gt (int $v.replicaCount) 1) (not $db) }}
{{- fail (printf "borealis-relay: replicaCount=%d needs a PostgreSQL database (database.existingSecret, or database.url): on SQLite only one replica may run, alone with its data dir" (int $v.replicaCount)) }}
{{- end }}
{{- range $item := list "secretKey" "adminToken" }}
{{- $s := get $v $item }}
{{- if and $s.existingSecret $s.value }}
{{- fail (printf "borealis-relay: give %s.existingSecret or %s.value, not both" $item $item) }}
{{- end }}
{{- end }}
{{- if and $v.database.existingSecret $v.database.url }}
{{- fail "borealis-relay: give database.existingSecret or database.url, not both" }}
{{- end }}
{{- if and $v.database.url (not (regexMatch "^postgres(ql)?://" $v.database.url)) }}
{{- fail "borealis-relay: database.url must be a postgres:// URL (without it the relay uses SQLite in its data dir)" }}
{{- end }}
{{- if and $v.adminToken.value (lt (len $v.adminToken.value) 16) }}
{{- fail "borealis-relay: adminToken.value must be at least 16 characters long" }}
{{- end }}
{{- if $v.secretKey.value }}
{{- if ne (len (b64dec $v.secretKey.value)) 32 }}
{{- fail "borealis-relay: secretKey.value must be the base64 of 32 bytes (head -c32 /dev/urandom | base64)" }}
{{- end }}
{{- end }}
{{- $o := $v.oidc }}
{{- if and $o.clientSecret.existingSecret $o.clientSecret.value }}
{{- fail "borealis-relay: give oidc.clientSecret.existingSecret or oidc.clientSecret.value, not both" }}
{{- end }}
{{- if $o.issuer }}
{{- if not (and $o.clientId (or $o.clientSecret.existingSecret $o.clientSecret.value)) }}
{{- fail "borealis-relay: oidc.issuer needs oidc.clientId and the client's secret (oidc.clientSecret.existingSecret or oidc.clientSecret.value)" }}
{{- end }}
{{- else if or $o.clientId $o.clientSecret.existingSecret $o.clientSecret.value $o.adminGroups }}
{{- fail "borealis-relay: oidc.clientId, oidc.clientSecret and oidc.adminGroups need oidc.issuer" }}
{{- end }}
{{- if $o.disableAdminToken }}
{{- if not (and $o.issuer $o.adminGroups) }}
{{- fail "borealis-relay: oidc.disableAdminToken leaves no organization admin: set oidc.issuer (people sign in) and oidc.adminGroups" }}
{{- end }}
{{- if or $v.adminToken.existingSecret $v.adminToken.value }}
{{- fail "borealis-relay: oidc.disableAdminToken turns the admin token off: give it or adminToken, not both" }}
{{- end }}
{{- end }}
{{- if and (ne (toString $v.podDisruptionBudget.minAvailable) "") (ne (toString $v.podDisruptionBudget.maxUnavailable) "") }}
{{- fail "borealis-relay: give podDisruptionBudget.minAvailable or podDisruptionBudget.maxUnavailable, not both" }}
{{- end }}
{{- $grace := include "borealis-relay.durationSeconds" $v.shutdownGrace | atoi }}
{{- if and $v.terminationGracePeriodSeconds (le (int $v.terminationGracePeriodSeconds) $grace) }}
{{- fail (printf "borealis-relay: terminationGracePeriodSeconds (%d) must exceed shutdownGrace (%s = %ds), or the kubelet kills requests the relay is still finishing; 0 computes it" (int $v.terminationGracePeriodSeconds) $v.shutdownGrace $grace) }}
{{- end }}
{{- if and $v.agentIngress.enabled (not $v.agentIngress.hosts) }}
{{- fail "borealis-relay: agentIngress.enabled needs agentIngress.hosts" }}
{{- end }}
{{- if and $v.ingress.enabled (not $v.ingress.hosts) }}
{{- fail "borealis-relay: ingress.enabled needs ingress.hosts" }}
{{- end }}
{{- $_ := include "borealis-relay.configToml" . }}
{{- end }}
