"""The resources moto's CloudFormation reports as created but does not create: the Glue
database and tables and the Athena workgroups. Provisioning takes them out of the template
before the stack is made and creates them through the Glue and Athena APIs from the same
properties, with the stack's names substituted as CloudFormation would. The buckets'
lifecycle rules, which it ignores, are applied through the S3 API.
"""

from __future__ import annotations

import json
from typing import Any

KINDS = ("AWS::Glue::Database", "AWS::Glue::Table", "AWS::Athena::WorkGroup")


def take(template: dict[str, Any], stage: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Remove the catalog resources (and the outputs that name them) from `template`;
    return them, and those outputs' values for `stage`."""
    resources = template["Resources"]
    taken = {k: resources.pop(k) for k in [k for k, r in resources.items() if r["Type"] in KINDS]}
    names = {logical_id: name_of(resource, stage) for logical_id, resource in taken.items()}
    outputs = {}
    for key, output in list(template.get("Outputs", {}).items()):
        value = output["Value"]
        if isinstance(value, dict) and value.get("Ref") in taken:
            outputs[key] = names[value["Ref"]]
            del template["Outputs"][key]
    return taken, outputs


def name_of(resource: dict[str, Any], stage: str) -> str:
    properties = resource["Properties"]
    value = (
        properties.get("Name")
        or properties.get("DatabaseInput", {}).get("Name")
        or properties.get("TableInput", {}).get("Name")
    )
    return _resolve(value, {"Stage": stage}, {})


def create(
    taken: dict[str, Any], physical: dict[str, str], stage: str, mappings: dict[str, Any],
    glue: Any, athena: Any,
) -> None:  # fmt: skip
    """Create the taken resources: databases first, then tables, then workgroups."""
    names = {**physical, **{k: name_of(r, stage) for k, r in taken.items()}, "Stage": stage}
    settings = mappings.get("StageSettings", {}).get(stage, {})
    order = sorted(taken.items(), key=lambda item: KINDS.index(item[1]["Type"]))
    for _, resource in order:
        properties = _resolve(resource["Properties"], names, settings)
        kind = resource["Type"]
        if kind == "AWS::Glue::Database":
            glue.create_database(DatabaseInput=properties["DatabaseInput"])
        elif kind == "AWS::Glue::Table":
            glue.create_table(DatabaseName=properties["DatabaseName"],
                              TableInput=properties["TableInput"])  # fmt: skip
        else:
            configuration = properties.get("WorkGroupConfiguration", {})
            configuration["BytesScannedCutoffPerQuery"] = int(
                configuration.get("BytesScannedCutoffPerQuery", 0)) or None  # fmt: skip
            athena.create_work_group(
                Name=properties["Name"],
                Description=properties.get("Description", ""),
                Configuration={k: v for k, v in configuration.items() if v is not None},
                Tags=properties.get("Tags", []),
            )


def _resolve(value: Any, names: dict[str, str], settings: dict[str, str]) -> Any:
    """Ref, Fn::Sub (with `${!literal}`), Fn::FindInMap on StageSettings, and the account
    id (not needed by these APIs: the catalog id is left out)."""
    if isinstance(value, list):
        return [_resolve(v, names, settings) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        if value["Ref"] not in names:
            raise RuntimeError(f"the emulator cannot resolve Ref {value['Ref']}")
        return names[value["Ref"]]
    if set(value) == {"Fn::Sub"}:
        text = value["Fn::Sub"]
        for name, physical in names.items():
            text = text.replace("${" + name + "}", physical)
        if "${" in text.replace("${!", ""):
            raise RuntimeError(f"the emulator cannot resolve {json.dumps(value)}")
        return text.replace("${!", "${")
    if set(value) == {"Fn::FindInMap"}:
        return settings[value["Fn::FindInMap"][2]]
    return {k: _resolve(v, names, settings) for k, v in value.items() if k != "CatalogId"}


def apply_lifecycles(template: dict[str, Any], physical: dict[str, str], s3: Any) -> None:
    """The buckets' LifecycleConfiguration, which moto's CloudFormation ignores, through the
    S3 API (CloudFormation's property names turned into the API's)."""
    for logical_id, resource in template["Resources"].items():
        rules = resource.get("Properties", {}).get("LifecycleConfiguration", {}).get("Rules")
        if resource["Type"] != "AWS::S3::Bucket" or not rules:
            continue
        s3.put_bucket_lifecycle_configuration(
            Bucket=physical[logical_id],
            LifecycleConfiguration={"Rules": [_lifecycle_rule(rule) for rule in rules]},
        )


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    api: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"],
                           "Filter": {"Prefix": rule.get("Prefix", "")}}  # fmt: skip
    if "Transitions" in rule:
        api["Transitions"] = [{"Days": t["TransitionInDays"], "StorageClass": t["StorageClass"]}
                              for t in rule["Transitions"]]  # fmt: skip
    if "ExpirationInDays" in rule:
        api["Expiration"] = {"Days": rule["ExpirationInDays"]}
    elif rule.get("ExpiredObjectDeleteMarker"):
        api["Expiration"] = {"ExpiredObjectDeleteMarker": True}
    if "NoncurrentVersionExpiration" in rule:
        api["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": rule["NoncurrentVersionExpiration"]["NoncurrentDays"]}  # fmt: skip
    if "AbortIncompleteMultipartUpload" in rule:
        api["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    return api
