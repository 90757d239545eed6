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

{{/*
The termination grace period: the value, or 2 x shutdownGrace + 15 s. On SIGTERM
the relay first waits up to shutdownGrace for its agents to drain, then gives each
listener up to shutdownGrace more for the requests in flight: up to about twice
shutdownGrace in all, and 15 s for the rest of the shutdown.
*/}}
{{- define "borealis-relay.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- else }}
{{- add (mul (include "borealis-relay.durationSeconds" .Values.shutdownGrace | int) 2) 15 }}
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
The data of the Secret <fullname>-generated as the cluster has it, as JSON: {}
when it is not there, or helm cannot read it (lookup reads nothing under
`helm template`, `--dry-run=client`, or without RBAC to get Secrets).
*/}}
{{- define "borealis-relay.generatedInCluster" -}}
{{- $name := printf "%s-generated" (include "borealis-relay.fullname" .) }}
{{- dig "data" (dict) (lookup "v1" "Secret" .Release.Namespace $name) | toJson }}
{{- end }}

{{/*
Where each secret comes from. Called with (dict "ctx" $ "item" NAME), NAME one
of secretKey, adminToken, database, oidcClientSecret; gives a YAML map
{source: existing|given|generated, name, key}, or nothing when the relay gets
none (no database, no oidc, the admin token turned off, or on SQLite the secret
key and the admin token the relay keeps in its data dir).

The chart generates the secret key and the admin token only with PostgreSQL,
where replicas share them and an emptyDir data dir cannot keep them. On SQLite
the relay makes its own, the files secret-key and admin-token in its data dir on
the claim, which no re-rendering can change; a key an earlier version of this
chart generated there (found by lookup) is kept, or the data it encrypted would
be unreadable.
*/}}
{{- define "borealis-relay.secretSource" -}}
{{- $v := .ctx.Values }}
{{- $full := include "borealis-relay.fullname" .ctx }}
{{- $db := include "borealis-relay.hasDatabase" .ctx }}
{{- $src := dict }}
{{- $generate := false }}
{{- if or (eq .item "secretKey") (eq .item "adminToken") }}
{{- $old := dict }}
{{- if not $db }}{{ $old = include "borealis-relay.generatedInCluster" .ctx | fromJson }}{{ end }}
{{- if eq .item "secretKey" }}
{{- $src = $v.secretKey }}
{{- $generate = or $db (hasKey $old "secret-key") }}
{{- else }}
{{- $src = $v.adminToken }}
{{- $generate = and (not $v.oidc.disableAdminToken) (or $db (hasKey $old "admin-token")) }}
{{- end }}
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
Settings the chart sets from its own values (or that are secrets, or that it
cannot serve): refused in .Values.config, with what to do instead.
*/}}
{{- define "borealis-relay.managedSettings" -}}
data_dir: "set persistence.* (the chart's data volume)"
listen: "the chart sets it (0.0.0.0:8080)"
agent_listen: "the chart sets it (0.0.0.0:9090)"
peer_url: "set peer.host (the chart writes http://<peer.host>:8080)"
public_url: "set publicUrl"
shutdown_grace: "set shutdownGrace"
log_format: "set logFormat"
trusted_proxies: "set trustedProxies"
database_url: "set database.existingSecret (a secret)"
secret_key: "set secretKey.existingSecret (a secret)"
admin_token: "set adminToken.existingSecret (a secret)"
oidc_client_secret: "set oidc.clientSecret.existingSecret (a secret)"
oidc_client_secret_file: "set oidc.clientSecret.existingSecret"
oidc_issuer: "set oidc.issuer"
oidc_client_id: "set oidc.clientId"
oidc_admin_groups: "set oidc.adminGroups"
oidc_groups_claim: "set oidc.groupsClaim"
oidc_scopes: "set oidc.scopes"
disable_admin_token: "set oidc.disableAdminToken"
tls_cert: {{ include "borealis-relay.noTls" . | quote }}
tls_key: {{ include "borealis-relay.noTls" . | quote }}
{{- end }}

{{- define "borealis-relay.noTls" -}}
this chart runs the relay on plain HTTP (its probes, the peer URL and the Services assume it): terminate TLS at the Ingress (ingress.tls, agentIngress.tls) or at the load balancer (agentService.annotations)
{{- end }}

{{/* .Values.config as TOML: one `key = value` line each, keys sorted. */}}
{{- define "borealis-relay.configToml" -}}
{{- $managed := include "borealis-relay.managedSettings" . | fromYaml }}
{{- range $k := keys .Values.config | sortAlpha }}
{{- if hasKey $managed $k }}
{{- fail (printf "borealis-relay: config.%s is not taken here: %s" $k (get $managed $k)) }}
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
{{- if and $v.terminationGracePeriodSeconds (le (int $v.terminationGracePeriodSeconds) (mul 2 $grace)) }}
{{- fail (printf "borealis-relay: terminationGracePeriodSeconds (%d) must exceed twice shutdownGrace (%s = %ds: agents drain for up to shutdownGrace, then requests in flight get up to shutdownGrace), or the kubelet kills requests the relay is still finishing; 0 computes 2 x shutdownGrace + 15" (int $v.terminationGracePeriodSeconds) $v.shutdownGrace $grace) }}
{{- end }}
{{- range $v.extraArgs }}
{{- if regexMatch "^--tls-(cert|key)([= ]|$)" . }}
{{- fail (printf "borealis-relay: extraArgs %s: %s" . (include "borealis-relay.noTls" $)) }}
{{- end }}
{{- end }}
{{- range $v.extraEnv }}
{{- if has .name (list "BOREALIS_TLS_CERT" "BOREALIS_TLS_KEY") }}
{{- fail (printf "borealis-relay: extraEnv %s: %s" .name (include "borealis-relay.noTls" $)) }}
{{- end }}
{{- end }}
{{- /* A key generated anew on an upgrade would not be the one in use: refuse. */}}
{{- if .Release.IsUpgrade }}
{{- $old := include "borealis-relay.generatedInCluster" . | fromJson }}
{{- $full := include "borealis-relay.fullname" . }}
{{- $s := include "borealis-relay.secretSource" (dict "ctx" . "item" "secretKey") | fromYaml }}
{{- if and (eq (toString $s.source) "generated") (not (hasKey $old "secret-key")) }}
{{- fail (printf "borealis-relay: this upgrade would generate a new secret key, and every secret the relay stored would be unreadable under it. The key generated at install (Secret %s-generated, key secret-key) could not be read back: lookup reads nothing under `helm template`, `--dry-run=client` or without RBAC to get Secrets (or there is none: moving from SQLite, the key is the relay's data dir's secret-key file). Give the key in use as secretKey.existingSecret (e.g. a Secret made from `kubectl get secret %s-generated -o jsonpath='{.data.secret-key}' | base64 -d`)" $full $full) }}
{{- end }}
{{- $t := include "borealis-relay.secretSource" (dict "ctx" . "item" "adminToken") | fromYaml }}
{{- if and (eq (toString $t.source) "generated") (not (hasKey $old "admin-token")) }}
{{- fail (printf "borealis-relay: this upgrade would generate a new admin token: the one generated at install (Secret %s-generated, key admin-token) could not be read back (lookup reads nothing under `helm template`, `--dry-run=client` or without RBAC to get Secrets). Give the token as adminToken.existingSecret, or turn it off (oidc.disableAdminToken)" $full) }}
{{- end }}
{{- end }}
{{- if and $v.agentIngress.enabled (not $v.agentIngress.hosts) }}
{{- fail "borealis-relay: agentIngress.enabled needs agentIngress.hosts" }}
{{- end }}
{{- if and $v.ingress.enabled (not $v.ingress.hosts) }}
{{- fail "borealis-relay: ingress.enabled needs ingress.hosts" }}
{{- end }}
{{- $_ := include "borealis-relay.configToml" . }}
{{- end }}
