# Applied (sed -E) to pkg/kubelet/dockershim/docker_sandbox.go and pkg/kubelet/qos/policy.go.
# This kernel refuses negative OOM score adjustments even to root: with upstream's -998 every
# pod sandbox fails (runc "can't get final child's PID"), with -997 every guaranteed pod.
s/^(\s*defaultSandboxOOMAdj\s+int\s*=\s*)-[0-9]+/\10/
s/^(\s*guaranteedOOMScoreAdj\s+int\s*=\s*)-[0-9]+/\10/
# Keep upstream's burstable floor (1000 - 997 = 3) instead of 1000 + 0, so burstable pods
# still rank below best-effort ones.
s/\(1000 \+ guaranteedOOMScoreAdj\)/(3)/g
