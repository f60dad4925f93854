"""Which user pool and app clients tokens must come from.

The ids are made when the resources are deployed, so they are not in the stage's config: the
resources stack writes them to an SSM parameter (`CognitoConfigParameter`), read once per
process: `{"user_pool_id", "client_id", "machine_client_id"}`, the last the app client of
trusted producers (system metrics, client-credentials grant). The JWKS URL follows the
Cognito endpoint boto3 resolves: the real one in AWS, the emulator's
(`/{pool_id}/.well-known/jwks.json`) locally. The issuer is always the AWS form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from chalicelib.core import aws
from chalicelib.core.resources import Resource


@dataclass(frozen=True)
class CognitoConfig:
    user_pool_id: str
    client_id: str
    region: str
    jwks_url: str
    #: App clients of trusted producers (client-credentials grant): their access tokens
    #: make machine principals. Empty for a parameter written before they existed.
    machine_client_ids: tuple[str, ...] = ()

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"


#: The SSM parameter holding the pool and client ids; whoever reads `cognito_config()` needs
#: `COGNITO_CONFIG_READ`.
COGNITO_CONFIG_PARAMETER = Resource("CognitoConfigParameter")
COGNITO_CONFIG_READ = COGNITO_CONFIG_PARAMETER.allow("ssm:GetParameter")


@cache
def cognito_config() -> CognitoConfig:
    name = COGNITO_CONFIG_PARAMETER.name
    value = json.loads(aws.client("ssm").get_parameter(Name=name)["Parameter"]["Value"])
    idp = aws.client("cognito-idp")
    pool_id = str(value["user_pool_id"])
    return CognitoConfig(
        user_pool_id=pool_id,
        client_id=str(value["client_id"]),
        region=idp.meta.region_name,
        jwks_url=f"{idp.meta.endpoint_url.rstrip('/')}/{pool_id}/.well-known/jwks.json",
        machine_client_ids=tuple(str(v) for v in [value.get("machine_client_id")] if v),
    )
