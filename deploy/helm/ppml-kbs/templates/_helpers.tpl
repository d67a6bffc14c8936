{{- define "ppml-kbs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ppml-kbs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "ppml-kbs.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "ppml-kbs.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ppml-kbs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ppml-kbs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ppml-kbs.labels" -}}
{{ include "ppml-kbs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ppml-kbs.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "ppml-kbs.tlsSecret" -}}
{{- if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "ppml-kbs.fullname" .) -}}
{{- else -}}
{{- required "set tls.existingSecret (a kubernetes.io/tls Secret) or tls.certManager.enabled=true" .Values.tls.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The broker's configuration: absolute paths, no secret (those are mounted files). */}}
{{- define "ppml-kbs.config" -}}
{{- $admin := list -}}
{{- range $i, $k := required "set adminPublicKeys (the admin.pub of ppml broker init)" .Values.adminPublicKeys -}}
{{- $admin = append $admin (printf "/etc/ppml-kbs/admin/admin-%d.pub" $i) -}}
{{- end -}}
{{- $storage := dict -}}
{{- if eq .Values.storage.kms "local" -}}
{{- $_ := required "set storage.local.existingSecret (storage-keystore.json, storage.passphrase)" .Values.storage.local.existingSecret -}}
{{- $storage = dict "key_uri" (printf "local:%s" .Values.storage.local.keyName) "kms" (dict "local" (dict "path" "/etc/ppml-kbs/storage/storage-keystore.json" "passphrase_file" "/etc/ppml-kbs/storage/storage.passphrase")) -}}
{{- else if eq .Values.storage.kms "azurekv" -}}
{{- $url := required "set storage.azurekv.vaultUrl" .Values.storage.azurekv.vaultUrl -}}
{{- $storage = dict "key_uri" (printf "azurekv:%s" .Values.storage.azurekv.keyName) "kms" (dict "azurekv" (dict "vault_url" $url)) -}}
{{- else -}}
{{- fail "storage.kms must be local or azurekv" -}}
{{- end -}}
{{- $config := dict "listen" (printf "0.0.0.0:%d" (int .Values.service.port)) "database" "/var/lib/ppml-kbs/broker.db" "storage" $storage "tls" (dict "certificate" "/run/ppml-kbs/keys/tls.crt" "private_key" "/run/ppml-kbs/keys/tls.key") "token_key" "/run/ppml-kbs/keys/token-key.pem" "admin_public_keys" $admin "session_ttl_seconds" .Values.sessionTtlSeconds -}}
{{- if .Values.collateral -}}
{{- $_ := set $config "collateral" .Values.collateral -}}
{{- end -}}
{{- if .Values.tokenIssuers -}}
{{- $_ := set $config "token_issuers" .Values.tokenIssuers -}}
{{- end -}}
{{- toPrettyJson $config -}}
{{- end -}}
