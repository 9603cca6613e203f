"""The autoscaler: pure policies (hpa, step, target-tracking), metric sources, the control
loop. See README.md in this folder for the layers, the decision log and how to wire it."""
