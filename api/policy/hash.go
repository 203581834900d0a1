package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// ContentHash identifies a policy's content, whatever its revision. policygen serves it as the ETag
// of GET /v1/policy, so a sidecar that restarts from its cached policy can compute the ETag of what it
// holds and send it as If-None-Match, which keeps it in step even when policygen replicas numbered the
// same content differently.
func ContentHash(p *Policy) string {
	cp := *p
	cp.Revision = 0
	data, err := json.Marshal(&cp)
	if err != nil {
		panic("policy: marshal: " + err.Error()) // plain data: cannot fail
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:16])
}
