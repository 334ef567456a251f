"""Evaluates an overlay's ValidatingAdmissionPolicies (their CEL, with cel-python) against
every pod the overlay would run, and against pods the policies must refuse.

Usage: admission.py RENDERED.yaml; prints one JSON object: the number of policies and pods,
the pods of the overlay a policy refuses (must be none), and the bad pods every policy
admits (must be none)."""
import json
import sys

import celpy
import yaml
from celpy import celtypes

ENV = celpy.Environment()


def evaluate(expression, activation):
    return ENV.program(ENV.compile(expression)).evaluate(activation)


def refusals(policy, pod):
    """The messages of the policy's validations that `pod` fails."""
    activation = {"object": celpy.json_to_cel(pod)}
    variables = {}
    for variable in policy["spec"].get("variables", []):
        activation["variables"] = celtypes.MapType(variables)
        variables[celtypes.StringType(variable["name"])] = evaluate(variable["expression"], activation)
    activation["variables"] = celtypes.MapType(variables)
    failed = []
    for validation in policy["spec"]["validations"]:
        result = evaluate(validation["expression"], activation)
        if not (isinstance(result, celtypes.BoolType) and bool(result)):
            failed.append(validation["message"])
    return failed


def main():
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    policies = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    pods = []
    for doc in docs:
        kind = doc["kind"]
        if kind in ("Deployment", "StatefulSet", "Job"):
            template = doc["spec"]["template"]
        elif kind == "CronJob":
            template = doc["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        pods.append((f"{kind}/{doc['metadata']['name']}", {"spec": template["spec"]}))
    limited = {"limits": {"cpu": "1", "memory": "1Gi"}}
    bad = {
        "a container without limits": {"spec": {"containers": [{"name": "x", "image": "x"}]}},
        "an init container without limits": {"spec": {
            "initContainers": [{"name": "init", "image": "x"}],
            "containers": [{"name": "x", "image": "x", "resources": limited}]}},
        "a privileged container": {"spec": {"containers": [{
            "name": "x", "image": "x", "resources": limited,
            "securityContext": {"privileged": True}}]}},
        "a container that may escalate": {"spec": {"containers": [{
            "name": "x", "image": "x", "resources": limited,
            "securityContext": {"allowPrivilegeEscalation": True}}]}},
        "a pod on the host's network": {"spec": {"hostNetwork": True, "containers": [
            {"name": "x", "image": "x", "resources": limited}]}},
    }
    print(json.dumps({
        "policies": len(policies),
        "pods": len(pods),
        "refused": [f"{name}: {message}" for name, pod in pods for policy in policies
                    for message in refusals(policy, pod)],
        "admitted": [name for name, pod in bad.items()
                     if not any(refusals(policy, pod) for policy in policies)],
    }))


main()
