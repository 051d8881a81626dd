{{/* The chart's name, or nameOverride. */}}
{{- define "kuberaft-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every object: fullnameOverride, else the release name when it already
contains the chart name (`helm install kuberaft-operator ...`), else <release>-<chart>.
Kubernetes names are limited to 63 characters.
*/}}
{{- define "kuberaft-operator.fullname" -}}
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

{{/* chart label: name-version. */}}
{{- define "kuberaft-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "kuberaft-operator.labels" -}}
helm.sh/chart: {{ include "kuberaft-operator.chart" . }}
{{ include "kuberaft-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kuberaft
{{- end }}

{{/* Labels that select the operator's pods (never change them: a Deployment's selector is immutable). */}}
{{- define "kuberaft-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kuberaft-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "kuberaft-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kuberaft-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image. */}}
{{- define "kuberaft-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The default kuberaft-node image for RaftClusters without spec.image. */}}
{{- define "kuberaft-operator.nodeImage" -}}
{{- printf "%s:%s" .Values.nodeImage.repository (default .Chart.AppVersion .Values.nodeImage.tag) }}
{{- end }}
