"""Batch errors in the wire shape of the real service.

Every failure answers with the body Azure Batch writes (``odata.metadata``, ``code``,
``message {lang, value}`` whose value ends in ``\\nRequestId:...\\nTime:...``, and ``values``
``[{key, value}]`` naming the property and the reason). Handlers raise :class:`BatchError`; the
server's middleware turns it into the response, adding the request id and the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The default message of each code, as the real service words it.
MESSAGES: dict[str, str] = {
    "AuthenticationFailed": (
        "Server failed to authenticate the request. Make sure the value of Authorization header is correctly "
        "formed including the signature."
    ),
    "ConditionNotMet": "The condition specified using HTTP conditional header(s) is not met.",
    "InvalidPropertyValue": "The value provided for one of the properties in the request body is invalid.",
    "MissingRequiredProperty": "A required property was not specified in the request body.",
    "InvalidRequestBody": "The specified Request Body is not syntactically valid.",
    "UnsupportedProperty": "One of the properties specified in the request body is not supported.",
    "InvalidQueryParameterValue": "Value for one of the query parameters specified in the request URI is invalid.",
    "MissingRequiredQueryParameter": "A query parameter that's mandatory for this request is not specified.",
    "InvalidHeaderValue": "The value for one of the HTTP headers is not in the correct format.",
    "InvalidUri": "The requested URI does not represent any resource on the server.",
    "UnsupportedHttpVerb": "The resource doesn't support specified Http Verb.",
    "JobScheduleExists": "The specified job schedule already exists.",
    "JobExists": "The specified job already exists.",
    "JobScheduleNotFound": "The specified job schedule does not exist.",
    "JobNotFound": "The specified job does not exist.",
    "TaskNotFound": "The specified task does not exist.",
    "PoolNotFound": "The specified pool does not exist.",
    "NodeNotFound": "The specified node does not exist.",
    "JobScheduleBeingDeleted": (
        "The specified job schedule has been marked for deletion and is being garbage collected."
    ),
    "JobScheduleBeingTerminated": "The specified job schedule is being terminated.",
    "JobScheduleCompleted": "The specified job schedule is already in a completed state.",
    "JobBeingDeleted": "The specified job has been marked for deletion and is being garbage collected.",
    "JobBeingTerminated": "The specified job is being terminated.",
    "JobCompleted": "The specified job is already in a completed state.",
    "JobNotActive": "The specified job is not in active state.",
    "JobDisabled": "The specified job is disabled.",
    "PoolBeingDeleted": "The specified pool has been marked for deletion and is being reclaimed.",
    "OperationInvalidForCurrentState": "The specified operation is not valid for the current state of the resource.",
    "ActiveJobAndScheduleQuotaReached": "The specified account has reached its quota of active jobs and job schedules.",
    "TooManyRequests": "Request failed as server encountered too many requests. Please try again.",
    "ServerBusy": "The server is currently unable to receive requests. Please retry your request.",
    "InternalError": "Server encountered an internal error. Please try again after some time.",
    "RequestBodyTooLarge": "The request body is too large and exceeds the maximum permissible limit.",
}

STATUS: dict[str, int] = {
    "AuthenticationFailed": 403,
    "ConditionNotMet": 412,
    "InvalidUri": 400,
    "UnsupportedHttpVerb": 405,
    "JobScheduleExists": 409,
    "JobExists": 409,
    "JobScheduleNotFound": 404,
    "JobNotFound": 404,
    "TaskNotFound": 404,
    "PoolNotFound": 404,
    "NodeNotFound": 404,
    "JobScheduleBeingDeleted": 409,
    "JobScheduleBeingTerminated": 409,
    "JobScheduleCompleted": 409,
    "JobBeingDeleted": 409,
    "JobBeingTerminated": 409,
    "JobCompleted": 409,
    "JobNotActive": 409,
    "JobDisabled": 409,
    "PoolBeingDeleted": 409,
    "OperationInvalidForCurrentState": 409,
    "ActiveJobAndScheduleQuotaReached": 409,
    "TooManyRequests": 429,
    "ServerBusy": 503,
    "InternalError": 500,
    "RequestBodyTooLarge": 413,
}

ERROR_METADATA = "$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"


@dataclass
class BatchError(Exception):
    """A failed request: ``code`` (Batch error code), optional ``values`` and an HTTP status.

    The status defaults from :data:`STATUS` (400 for validation codes).
    """

    code: str
    values: list[tuple[str, str]] = field(default_factory=list)
    status: int | None = None
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status is None:
            self.status = STATUS.get(self.code, 400)
        Exception.__init__(self, f"{self.code}: {self.values}")

    def body(self, *, base_url: str, request_id: str, time: str) -> dict[str, object]:
        text = self.message or MESSAGES.get(self.code, self.code)
        out: dict[str, object] = {
            "odata.metadata": f"{base_url}/{ERROR_METADATA}",
            "code": self.code,
            "message": {"lang": "en-US", "value": f"{text}\nRequestId:{request_id}\nTime:{time}"},
        }
        if self.values:
            out["values"] = [{"key": k, "value": v} for k, v in self.values]
        return out


def invalid_value(prop: str, value: object, reason: str) -> BatchError:
    """400 InvalidPropertyValue naming the property, its value and why."""
    return BatchError(
        "InvalidPropertyValue",
        [("PropertyName", prop), ("PropertyValue", _text(value)), ("Reason", reason)],
    )


def missing(prop: str, reason: str | None = None) -> BatchError:
    """400 MissingRequiredProperty naming the property."""
    values = [("PropertyName", prop)]
    if reason:
        values.append(("Reason", reason))
    return BatchError("MissingRequiredProperty", values)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
