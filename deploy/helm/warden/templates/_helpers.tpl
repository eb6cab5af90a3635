{{/* Names, labels, the rendered Warden config and the chart's own checks. */}}

{{- define "warden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-warden, or the release name alone when it already contains the chart name. */}}
{{- define "warden.fullname" -}}
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

{{- define "warden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "warden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "warden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "warden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "warden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "warden.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding state-url, state.key and session-keys. */}}
{{- define "warden.secretName" -}}
{{- if .Values.secrets.create }}
{{- printf "%s-keys" (include "warden.fullname" .) }}
{{- else }}
{{- required "secrets.existingSecret: name a Secret with state-url, state.key and session-keys (or set secrets.create)" .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{- define "warden.configDir" -}}/etc/warden/config{{- end }}
{{- define "warden.policiesDir" -}}/etc/warden/policies{{- end }}
{{- define "warden.keysDir" -}}/etc/warden/keys{{- end }}
{{- define "warden.tlsDir" -}}/etc/warden/tls{{- end }}

{{/*
The config file as Warden reads it: `.Values.config` plus `policy.files` for the chart's
policies and `gateway.tls` when the chart mounts a certificate.
*/}}
{{- define "warden.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- if .Values.policies }}
{{- $policy := deepCopy (default (dict) $cfg.policy) }}
{{- $files := list }}
{{- range $f := (default (list) $policy.files) }}
{{- $files = append $files $f }}
{{- end }}
{{- range $name, $_ := .Values.policies }}
{{- $files = append $files (printf "%s/%s" (include "warden.policiesDir" $) $name) }}
{{- end }}
{{- $_ := set $policy "files" $files }}
{{- $_ := set $cfg "policy" $policy }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $gw := $cfg.gateway }}
{{- $_ := set $gw "tls" (dict "cert" (printf "%s/tls.crt" (include "warden.tlsDir" .)) "key" (printf "%s/tls.key" (include "warden.tlsDir" .))) }}
{{- $_ := unset $gw "allow_insecure_http" }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* config.limits.shutdown_grace in whole seconds (default 15s); only `Ns`, `Nm` or `Nms`. */}}
{{- define "warden.shutdownGraceSeconds" -}}
{{- $g := "15s" }}
{{- $limits := default (dict) .Values.config.limits }}
{{- if $limits.shutdown_grace }}
{{- $g = toString $limits.shutdown_grace }}
{{- end }}
{{- if regexMatch "^[0-9]+s$" $g }}
{{- trimSuffix "s" $g | atoi }}
{{- else if regexMatch "^[0-9]+m$" $g }}
{{- mul (trimSuffix "m" $g | atoi) 60 }}
{{- else if regexMatch "^[0-9]+ms$" $g }}
{{- 1 }}
{{- else }}
{{- fail (printf "config.limits.shutdown_grace: write it as whole seconds or minutes (e.g. 15s), not %q, so that the chart can check terminationGracePeriodSeconds" $g) }}
{{- end }}
{{- end }}

{{/* Refuse values that would deploy something broken; called from the Deployment. */}}
{{- define "warden.checks" -}}
{{- $cfg := .Values.config }}
{{- /* Every pod address: 0.0.0.0, or [::] on IPv6 clusters. */}}
{{- $want := printf "0.0.0.0:%v" .Values.ports.mcp }}
{{- if not (has (toString $cfg.gateway.listen) (list $want (printf "[::]:%v" .Values.ports.mcp))) }}
{{- fail (printf "config.gateway.listen must be %s or [::]:%v (ports.mcp, on every pod address), not %v" $want .Values.ports.mcp $cfg.gateway.listen) }}
{{- end }}
{{- $wantAdmin := printf "0.0.0.0:%v" .Values.ports.admin }}
{{- $admin := default (dict) $cfg.admin }}
{{- if not (has (toString $admin.listen) (list $wantAdmin (printf "[::]:%v" .Values.ports.admin))) }}
{{- fail (printf "config.admin.listen must be %s or [::]:%v (ports.admin): the probes and Prometheus reach it on the pod IP" $wantAdmin .Values.ports.admin) }}
{{- end }}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}
{{- $state := default (dict) $cfg.state }}
{{- if not (or $state.url $state.url_env) }}
{{- fail "config.state: several replicas need one shared PostgreSQL (state.url_env with secrets' state-url); without it each pod keeps its own SQLite" }}
{{- end }}
{{- if and $state.url (not (regexMatch "^postgres(ql)?://" (toString $state.url))) }}
{{- fail "config.state.url: several replicas need PostgreSQL (postgres://...), not a per-pod SQLite file" }}
{{- end }}
{{- if and $state.url_env .Values.secrets.create (not (regexMatch "^postgres(ql)?://" .Values.secrets.stateUrl)) }}
{{- fail "secrets.stateUrl: several replicas need PostgreSQL (postgres://...)" }}
{{- end }}
{{- end }}
{{- range $name, $_ := .Values.policies }}
{{- if not (hasSuffix ".cedar" $name) }}
{{- fail (printf "policies: %q must end in .cedar" $name) }}
{{- end }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.secretName: name the kubernetes.io/tls Secret to mount" }}
{{- end }}
{{- $grace := include "warden.shutdownGraceSeconds" . | atoi }}
{{- if le (int .Values.terminationGracePeriodSeconds) (add (int .Values.preStopSleepSeconds) $grace) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds (%v) + config.limits.shutdown_grace (%vs), or the kubelet kills in-flight requests" .Values.terminationGracePeriodSeconds .Values.preStopSleepSeconds $grace) }}
{{- end }}
{{- end }}
