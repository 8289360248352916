{{/* The chart name, "autoheal" unless overridden. */}}
{{- define "autoheal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The object name prefix: the release name when it contains the chart name. */}}
{{- define "autoheal.fullname" -}}
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

{{- define "autoheal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "autoheal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "autoheal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "autoheal.labels" -}}
helm.sh/chart: {{ include "autoheal.chart" . }}
{{ include "autoheal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: autoheal
{{- end }}

{{- define "autoheal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "autoheal.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's user name, as the API server sees its requests. */}}
{{- define "autoheal.operatorUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "autoheal.serviceAccountName" . }}
{{- end }}

{{- define "autoheal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
