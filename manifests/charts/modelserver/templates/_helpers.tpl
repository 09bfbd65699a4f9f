{{- define "modelserver.servedName" -}}
{{- .Values.model.servedName | default (required "model.id is required" .Values.model.id) -}}
{{- end -}}

{{/* Labels that select this release's pods; kept free of anything a fault may change. */}}
{{- define "modelserver.selectorLabels" -}}
app.kubernetes.io/name: modelserver
app.kubernetes.io/instance: {{ .Release.Name }}
llm-d.ai/role: decode
{{- end -}}

{{- define "modelserver.podLabels" -}}
{{- $labels := dict
  "app.kubernetes.io/name" "modelserver"
  "app.kubernetes.io/instance" .Release.Name
  "llm-d.ai/role" "decode"
  "llm-d.ai/model" (required "model.shortName is required (the llm-d.ai/model label value)" .Values.model.shortName)
-}}
{{- $_ := set $labels .Values.servingLabelKey "true" -}}
{{- range $key, $value := .Values.podLabels -}}
{{- if kindIs "invalid" $value -}}
{{- $_ := unset $labels $key -}}
{{- else -}}
{{- $_ := set $labels $key (toString $value) -}}
{{- end -}}
{{- end -}}
{{- toYaml $labels -}}
{{- end -}}

{{/* The container's arguments: a `vllm serve` command line or the sim's flags. */}}
{{- define "modelserver.args" -}}
{{- $v := .Values -}}
{{- $args := list -}}
{{- if eq $v.engine "vllm" -}}
{{- $args = concat (list ($v.model.hfId | default $v.model.id) "--port" (toString $v.port) "--served-model-name" (include "modelserver.servedName" .)) $v.model.extraServedNames -}}
{{- with $v.maxModelLen }}{{ $args = concat $args (list "--max-model-len" (toString .)) }}{{ end -}}
{{- with $v.vllm.gpuMemoryUtilization }}{{ $args = concat $args (list "--gpu-memory-utilization" (toString .)) }}{{ end -}}
{{- with $v.adapters -}}
{{- $args = concat $args (list "--enable-lora" "--max-loras" (len . | toString) "--lora-modules") -}}
{{- range $name := . }}{{ $args = append $args (printf "%s=%s/%s" $name $v.vllm.adapterRoot $name) }}{{ end -}}
{{- end -}}
{{- $args = concat $args $v.vllm.extraArgs -}}
{{- else if eq $v.engine "sim" -}}
{{- $args = concat (list "--model" $v.model.id "--served-model-name" (include "modelserver.servedName" .)) $v.model.extraServedNames (list "--port" (toString $v.port)) -}}
{{- with $v.maxModelLen }}{{ $args = concat $args (list "--max-model-len" (toString .)) }}{{ end -}}
{{- if $v.sim.forceDummyTokenizer }}{{ $args = append $args "--force-dummy-tokenizer" }}{{ end -}}
{{- with $v.sim.timeToFirstToken }}{{ $args = concat $args (list "--time-to-first-token" .) }}{{ end -}}
{{- with $v.sim.interTokenLatency }}{{ $args = concat $args (list "--inter-token-latency" .) }}{{ end -}}
{{- with $v.sim.startupDuration }}{{ $args = concat $args (list "--startup-duration" .) }}{{ end -}}
{{- with $v.sim.failureInjectionRate }}{{ $args = concat $args (list "--failure-injection-rate" (toString .)) }}{{ end -}}
{{- with $v.sim.failureTypes }}{{ $args = concat $args (list "--failure-types") . }}{{ end -}}
{{- with $v.adapters -}}
{{- $args = append $args "--lora-modules" -}}
{{- range $name := . }}{{ $args = append $args (dict "name" $name | toJson) }}{{ end -}}
{{- $args = concat $args (list "--max-loras" (len . | toString)) -}}
{{- end -}}
{{- $args = concat $args $v.sim.extraArgs -}}
{{- else -}}
{{- fail (printf "engine must be vllm or sim, got %q" $v.engine) -}}
{{- end -}}
{{- toYaml $args -}}
{{- end -}}
