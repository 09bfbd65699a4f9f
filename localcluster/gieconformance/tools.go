//go:build tools

// Keeps the conformance package (built by 'go test -c', not imported by anything here) in go.mod.
package tools

import _ "sigs.k8s.io/gateway-api-inference-extension/conformance"
