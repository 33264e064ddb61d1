"""Stopping workers: ECS services, Auto Scaling groups, Lambda, EventBridge rules, SSM flags.

::

    - id: stop-signers
      action: aws.ecs.scale_service
      with: {cluster: wallets, service: hot-signer, desired_count: 0}
    - id: stop-sweeps
      action: aws.events.disable_rule
      with: {name: hourly-sweep}
    - id: kill-switch
      action: aws.ssm.put_parameter
      with: {name: /exchange/withdrawals/enabled, value: "false"}
    # ... and later, to resume:
    - id: restart-signers
      action: aws.ecs.scale_service
      with:
        cluster: wallets
        service: hot-signer
        desired_count: "{{ steps['stop-signers'].outputs.previous_desired_count }}"

Every action here reads the current state first, changes only what differs
(running one again is harmless), and returns the state it found as
``previous_*`` so a later step can restore it.  The state found is journaled
(``ctx.record``) just before the change, so when a crashed step already took
effect its ``probe``, which reads the state again, still reports what the state
was before (SSM's comes from the parameter's history).
``simulate`` calls nothing: values it cannot know without asking AWS are
``null``.

Shared by the other modules of this integration: :class:`Inputs` (the base of
every input model) and :func:`aws` (a client for the step).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from irctl.actions import ActionContext, Probe, action
from irctl.errors import ActionError
from irctl_aws._client import action_client, call

Outputs = dict[str, Any]


class Inputs(BaseModel):
    """Base of the AWS input models: unknown fields are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def aws(service: str, ctx: ActionContext) -> Any:
    """The action's client for ``service`` (see :func:`irctl_aws._client.action_client`)."""
    return action_client(service, ctx)


def before_change(ctx: ActionContext, name: str, current: Any) -> Any:
    """What ``name`` was before this step changed anything, for the restore step's inputs.

    Journaled (``ctx.record``) just before the change, so that after a crash the probe, and
    a retry that finds the change already made, report the value from before the change
    instead of the changed one.
    """
    if name in ctx.facts:
        return ctx.facts[name]
    ctx.record(**{name: current})
    return current


def simulated(would: str, **outputs: Any) -> Outputs:
    return {"simulated": True, "would": would, **outputs}


# --- ECS ------------------------------------------------------------------------------------


class ScaleService(Inputs):
    """Set an ECS service's desired task count."""

    cluster: str = Field(min_length=1, description="cluster name or ARN")
    service: str = Field(min_length=1, description="service name or ARN")
    desired_count: int = Field(ge=0, description="tasks to run; 0 stops the service's workers")


def _ecs_service(ecs: Any, inputs: ScaleService) -> dict[str, Any]:
    where = f"ECS service {inputs.service} in cluster {inputs.cluster}"
    found = call(
        lambda: ecs.describe_services(cluster=inputs.cluster, services=[inputs.service]),
        f"ECS DescribeServices on {where}",
    )
    if not found.get("services"):
        reasons = ", ".join(str(f.get("reason", "")) for f in found.get("failures", []))
        raise ActionError(f"{where}: not found ({reasons or 'MISSING'})", retryable=False)
    service: dict[str, Any] = found["services"][0]
    if service.get("status") != "ACTIVE":
        raise ActionError(
            f"{where} is {service.get('status')}, not ACTIVE: it cannot be scaled",
            retryable=False,
        )
    return service


def _scaled(inputs: ScaleService, service: dict[str, Any], previous: int | None) -> Outputs:
    return {
        "cluster": inputs.cluster,
        "service": inputs.service,
        "previous_desired_count": previous,
        "desired_count": int(service["desiredCount"]),
        "running_count": int(service.get("runningCount", 0)),
    }


@action("aws.ecs.scale_service", idempotent=True)
def scale_service(inputs: ScaleService, ctx: ActionContext) -> Outputs:
    """Set an ECS service's desired count (0 stops its workers)."""
    ecs = aws("ecs", ctx)
    service = _ecs_service(ecs, inputs)
    current = int(service["desiredCount"])
    if current == inputs.desired_count:
        ctx.note(f"ECS service {inputs.service} already wants {current} tasks")
        previous = ctx.facts.get("previous_desired_count", current)
        return {**_scaled(inputs, service, previous), "changed": False}
    previous = before_change(ctx, "previous_desired_count", current)
    updated = call(
        lambda: ecs.update_service(
            cluster=inputs.cluster, service=inputs.service, desiredCount=inputs.desired_count
        ),
        f"ECS UpdateService desiredCount={inputs.desired_count} on service {inputs.service} "
        f"in cluster {inputs.cluster}",
    )
    return {**_scaled(inputs, updated["service"], previous), "changed": True}


@scale_service.simulate
def _scale_service_simulate(inputs: ScaleService, ctx: ActionContext) -> Outputs:
    return simulated(
        f"set ECS service {inputs.service} in cluster {inputs.cluster} to "
        f"{inputs.desired_count} tasks",
        cluster=inputs.cluster, service=inputs.service, previous_desired_count=None,
        desired_count=inputs.desired_count, running_count=None, changed=None,
    )  # fmt: skip


@scale_service.probe
def _scale_service_probe(inputs: ScaleService, ctx: ActionContext) -> Probe:
    service = _ecs_service(aws("ecs", ctx), inputs)
    if int(service["desiredCount"]) != inputs.desired_count:
        return Probe.not_done(f"desired count is {service['desiredCount']}")
    previous = ctx.facts.get("previous_desired_count")
    return Probe.done({**_scaled(inputs, service, previous), "changed": None})


# --- Auto Scaling ---------------------------------------------------------------------------

Process = Literal[
    "Launch", "Terminate", "AddToLoadBalancer", "AlarmNotification", "AZRebalance",
    "HealthCheck", "InstanceRefresh", "ReplaceUnhealthy", "ScheduledActions",
]  # fmt: skip


class SetCapacity(Inputs):
    """Set an Auto Scaling group's sizes and suspend or resume its processes."""

    group: str = Field(min_length=1, description="Auto Scaling group name")
    min: int | None = Field(default=None, ge=0, description="minimum size; unchanged if omitted")
    max: int | None = Field(default=None, ge=0, description="maximum size; unchanged if omitted")
    desired: int | None = Field(
        default=None, ge=0, description="desired capacity; unchanged if omitted"
    )
    suspend_processes: list[Process] | None = Field(
        default=None,
        description="processes to suspend first (e.g. Launch, AlarmNotification, "
        "ScheduledActions, so nothing scales the group back up)",
    )
    resume_processes: list[Process] | None = Field(
        default=None, description="processes to resume after the sizes are set"
    )

    @model_validator(mode="after")
    def _coherent(self) -> SetCapacity:
        sizes = (self.min, self.max, self.desired)
        if (
            all(v is None for v in sizes)
            and not self.suspend_processes
            and not self.resume_processes
        ):
            raise ValueError("give min, max, desired, suspend_processes or resume_processes")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        if self.desired is not None:
            if self.min is not None and self.desired < self.min:
                raise ValueError(f"desired ({self.desired}) is below min ({self.min})")
            if self.max is not None and self.desired > self.max:
                raise ValueError(f"desired ({self.desired}) is above max ({self.max})")
        both = set(self.suspend_processes or []) & set(self.resume_processes or [])
        if both:
            raise ValueError(f"processes both suspended and resumed: {sorted(both)}")
        return self

    def sizes(self) -> dict[str, int]:
        given = {"min": self.min, "max": self.max, "desired": self.desired}
        return {k: v for k, v in given.items() if v is not None}


def _asg_group(asg: Any, name: str) -> dict[str, Any]:
    found = call(
        lambda: asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name]),
        f"Auto Scaling DescribeAutoScalingGroups on group {name}",
    )
    if not found.get("AutoScalingGroups"):
        raise ActionError(f"Auto Scaling group {name}: not found", retryable=False)
    group: dict[str, Any] = found["AutoScalingGroups"][0]
    return group


def _asg_sizes(group: dict[str, Any]) -> dict[str, int]:
    return {
        "min": int(group["MinSize"]),
        "max": int(group["MaxSize"]),
        "desired": int(group["DesiredCapacity"]),
    }


def _suspended(group: dict[str, Any]) -> list[str]:
    return sorted(str(p["ProcessName"]) for p in group.get("SuspendedProcesses", []))


def _capacity(
    inputs: SetCapacity, group: dict[str, Any], previous: dict[str, Any] | None
) -> Outputs:
    return {
        "group": inputs.group,
        "previous": previous,
        **_asg_sizes(group),
        "suspended_processes": _suspended(group),
    }


@action("aws.autoscaling.set_capacity", idempotent=True)
def set_capacity(inputs: SetCapacity, ctx: ActionContext) -> Outputs:
    """Set an Auto Scaling group's min/max/desired and suspend or resume its processes."""
    asg = aws("autoscaling", ctx)
    group = _asg_group(asg, inputs.group)
    before = _asg_sizes(group)
    suspended = _suspended(group)
    current = {**before, "suspended_processes": suspended}
    changed = False
    to_suspend = [p for p in inputs.suspend_processes or [] if p not in suspended]
    wanted = inputs.sizes()
    to_resume = [p for p in inputs.resume_processes or [] if p in suspended]
    if to_suspend or to_resume or any(before[k] != v for k, v in wanted.items()):
        previous = before_change(ctx, "previous", current)
    else:
        previous = ctx.facts.get("previous", current)
    if to_suspend:
        call(
            lambda: asg.suspend_processes(
                AutoScalingGroupName=inputs.group, ScalingProcesses=to_suspend
            ),
            f"Auto Scaling SuspendProcesses {to_suspend} on group {inputs.group}",
        )
        changed = True
    if any(before[k] != v for k, v in wanted.items()):
        names = {"min": "MinSize", "max": "MaxSize", "desired": "DesiredCapacity"}
        sizes = {names[k]: v for k, v in wanted.items()}
        call(
            lambda: asg.update_auto_scaling_group(AutoScalingGroupName=inputs.group, **sizes),
            f"Auto Scaling UpdateAutoScalingGroup {wanted} on group {inputs.group}",
        )
        changed = True
    if to_resume:
        call(
            lambda: asg.resume_processes(
                AutoScalingGroupName=inputs.group, ScalingProcesses=to_resume
            ),
            f"Auto Scaling ResumeProcesses {to_resume} on group {inputs.group}",
        )
        changed = True
    after = _asg_group(asg, inputs.group) if changed else group
    return {**_capacity(inputs, after, previous), "changed": changed}


@set_capacity.simulate
def _set_capacity_simulate(inputs: SetCapacity, ctx: ActionContext) -> Outputs:
    parts = [f"set {inputs.sizes()}"] if inputs.sizes() else []
    if inputs.suspend_processes:
        parts.insert(0, f"suspend {inputs.suspend_processes}")
    if inputs.resume_processes:
        parts.append(f"resume {inputs.resume_processes}")
    return simulated(
        f"Auto Scaling group {inputs.group}: " + ", then ".join(parts),
        # unknown without asking AWS, but with its fields: a restore step of a drill that
        # reads previous.min gets null (its inputs are incomplete) instead of a failed render
        group=inputs.group,
        previous={"min": None, "max": None, "desired": None, "suspended_processes": None},
        min=inputs.min, max=inputs.max,
        desired=inputs.desired, suspended_processes=None, changed=None,
    )  # fmt: skip


@set_capacity.probe
def _set_capacity_probe(inputs: SetCapacity, ctx: ActionContext) -> Probe:
    group = _asg_group(aws("autoscaling", ctx), inputs.group)
    sizes, suspended = _asg_sizes(group), _suspended(group)
    differs = {k: sizes[k] for k, v in inputs.sizes().items() if sizes[k] != v}
    if differs:
        return Probe.not_done(f"sizes differ: {differs}")
    if not set(inputs.suspend_processes or []) <= set(suspended):
        return Probe.not_done(f"suspended processes are {suspended}")
    if set(inputs.resume_processes or []) & set(suspended):
        return Probe.not_done(f"suspended processes are {suspended}")
    # Nothing journaled: no attempt got as far as changing the group, so the sizes found now
    # are the ones from before the step, and a restore step can still read them.
    current = {**sizes, "suspended_processes": suspended}
    previous = ctx.facts.get("previous", current)
    return Probe.done({**_capacity(inputs, group, previous), "changed": None})


# --- Lambda ---------------------------------------------------------------------------------


class SetConcurrency(Inputs):
    """Reserve a Lambda function's concurrency (0 stops every invocation)."""

    function_name: str = Field(min_length=1, description="function name or ARN")
    reserved: int | None = Field(
        ge=0, description="reserved concurrent executions: 0 stops the function; "
        "null removes the reservation (restores the unreserved default)",
    )  # fmt: skip


def _reserved(lam: Any, name: str) -> int | None:
    found = call(
        lambda: lam.get_function_concurrency(FunctionName=name),
        f"Lambda GetFunctionConcurrency on function {name}",
    )
    value = found.get("ReservedConcurrentExecutions")
    return None if value is None else int(value)


@action("aws.lambda.set_concurrency", idempotent=True)
def set_concurrency(inputs: SetConcurrency, ctx: ActionContext) -> Outputs:
    """Set (or remove) a Lambda function's reserved concurrency; 0 stops it."""
    lam = aws("lambda", ctx)
    name = inputs.function_name
    current = _reserved(lam, name)
    if current == inputs.reserved:
        ctx.note(f"Lambda function {name} already has reserved concurrency {current}")
        previous = ctx.facts.get("previous_reserved", current)
        return {"function_name": name, "previous_reserved": previous,
                "reserved": inputs.reserved, "changed": False}  # fmt: skip
    previous = before_change(ctx, "previous_reserved", current)
    outputs = {"function_name": name, "previous_reserved": previous, "reserved": inputs.reserved}
    if inputs.reserved is None:
        call(
            lambda: lam.delete_function_concurrency(FunctionName=name),
            f"Lambda DeleteFunctionConcurrency on function {name}",
        )
    else:
        reserved = inputs.reserved
        call(
            lambda: lam.put_function_concurrency(
                FunctionName=name, ReservedConcurrentExecutions=reserved
            ),
            f"Lambda PutFunctionConcurrency {reserved} on function {name}",
        )
    return {**outputs, "changed": True}


@set_concurrency.simulate
def _set_concurrency_simulate(inputs: SetConcurrency, ctx: ActionContext) -> Outputs:
    what = (
        "remove the reserved concurrency of"
        if inputs.reserved is None
        else f"reserve {inputs.reserved} concurrent executions for"
    )
    return simulated(
        f"{what} Lambda function {inputs.function_name}",
        function_name=inputs.function_name, previous_reserved=None,
        reserved=inputs.reserved, changed=None,
    )  # fmt: skip


@set_concurrency.probe
def _set_concurrency_probe(inputs: SetConcurrency, ctx: ActionContext) -> Probe:
    current = _reserved(aws("lambda", ctx), inputs.function_name)
    if current != inputs.reserved:
        return Probe.not_done(f"reserved concurrency is {current}")
    return Probe.done(
        {"function_name": inputs.function_name,
         "previous_reserved": ctx.facts.get("previous_reserved"), "reserved": current,
         "changed": None}
    )  # fmt: skip


# --- EventBridge ----------------------------------------------------------------------------


class Rule(Inputs):
    """An EventBridge rule (a schedule that starts sweeps, say)."""

    name: str = Field(min_length=1, description="rule name")
    event_bus: str = Field(default="default", min_length=1, description="event bus name or ARN")


def _rule_state(events: Any, inputs: Rule) -> str:
    found = call(
        lambda: events.describe_rule(Name=inputs.name, EventBusName=inputs.event_bus),
        f"EventBridge DescribeRule on rule {inputs.name} (bus {inputs.event_bus})",
    )
    return str(found["State"])


def _is_enabled(state: str) -> bool:
    return state.startswith("ENABLED")  # also ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS


def _set_rule(inputs: Rule, ctx: ActionContext, *, enable: bool) -> Outputs:
    events = aws("events", ctx)
    current = _rule_state(events, inputs)
    if _is_enabled(current) == enable:
        ctx.note(f"EventBridge rule {inputs.name} is already {current}")
        previous = ctx.facts.get("previous_state", current)
        return {"name": inputs.name, "event_bus": inputs.event_bus, "previous_state": previous,
                "state": current, "changed": False}  # fmt: skip
    previous = before_change(ctx, "previous_state", current)
    outputs = {"name": inputs.name, "event_bus": inputs.event_bus, "previous_state": previous}
    verb = "EnableRule" if enable else "DisableRule"
    change = events.enable_rule if enable else events.disable_rule
    call(
        lambda: change(Name=inputs.name, EventBusName=inputs.event_bus),
        f"EventBridge {verb} on rule {inputs.name} (bus {inputs.event_bus})",
    )
    return {**outputs, "state": _rule_state(events, inputs), "changed": True}


def _rule_probe(inputs: Rule, ctx: ActionContext, *, enable: bool) -> Probe:
    state = _rule_state(aws("events", ctx), inputs)
    if _is_enabled(state) != enable:
        return Probe.not_done(f"rule is {state}")
    return Probe.done(
        {"name": inputs.name, "event_bus": inputs.event_bus,
         "previous_state": ctx.facts.get("previous_state"), "state": state, "changed": None}
    )  # fmt: skip


def _rule_simulate(inputs: Rule, *, enable: bool) -> Outputs:
    return simulated(
        f"{'enable' if enable else 'disable'} EventBridge rule {inputs.name} "
        f"(bus {inputs.event_bus})",
        name=inputs.name, event_bus=inputs.event_bus, previous_state=None,
        state="ENABLED" if enable else "DISABLED", changed=None,
    )  # fmt: skip


@action("aws.events.disable_rule", idempotent=True)
def disable_rule(inputs: Rule, ctx: ActionContext) -> Outputs:
    """Disable an EventBridge rule (stops scheduled sweeps and event-driven workers)."""
    return _set_rule(inputs, ctx, enable=False)


@disable_rule.simulate
def _disable_rule_simulate(inputs: Rule, ctx: ActionContext) -> Outputs:
    return _rule_simulate(inputs, enable=False)


@disable_rule.probe
def _disable_rule_probe(inputs: Rule, ctx: ActionContext) -> Probe:
    return _rule_probe(inputs, ctx, enable=False)


@action("aws.events.enable_rule", idempotent=True)
def enable_rule(inputs: Rule, ctx: ActionContext) -> Outputs:
    """Enable an EventBridge rule again."""
    return _set_rule(inputs, ctx, enable=True)


@enable_rule.simulate
def _enable_rule_simulate(inputs: Rule, ctx: ActionContext) -> Outputs:
    return _rule_simulate(inputs, enable=True)


@enable_rule.probe
def _enable_rule_probe(inputs: Rule, ctx: ActionContext) -> Probe:
    return _rule_probe(inputs, ctx, enable=True)


# --- SSM Parameter Store --------------------------------------------------------------------


class PutParameter(Inputs):
    """Set a plain SSM parameter: a kill switch or a feature flag (never a secret)."""

    name: str = Field(min_length=1, description="parameter name, e.g. /exchange/withdrawals/on")
    value: str = Field(min_length=1, description="the value (plain text: not for secrets)")
    type: Literal["String", "StringList"] = Field(
        default="String", description="String or StringList (SecureString is refused)"
    )
    overwrite: bool = Field(default=True, description="replace an existing value")


def _parameter(ssm: Any, name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    def fetch() -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = ssm.get_parameter(Name=name)["Parameter"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
                return None
            raise
        return found

    return call(fetch, f"SSM GetParameter on parameter {name}")


def _value_before(ssm: Any, name: str, version: int) -> str | None:
    """The value of ``name`` before ``version`` (None if ``version`` created it)."""
    pages = call(
        lambda: list(ssm.get_paginator("get_parameter_history").paginate(Name=name)),
        f"SSM GetParameterHistory on parameter {name}",
    )
    for page in pages:
        for entry in page.get("Parameters", []):
            if int(entry["Version"]) == version - 1:
                return str(entry["Value"])
    return None


@action("aws.ssm.put_parameter", idempotent=True)
def put_parameter(inputs: PutParameter, ctx: ActionContext) -> Outputs:
    """Set an SSM parameter (a kill switch or flag); nothing is written if it already holds it."""
    ssm = aws("ssm", ctx)
    current = _parameter(ssm, inputs.name)
    outputs: Outputs = {"name": inputs.name, "value": inputs.value}
    if current is not None:
        if current.get("Type") == "SecureString":
            raise ActionError(
                f"SSM parameter {inputs.name} is a SecureString: aws.ssm.put_parameter writes "
                "plain flags only (use aws.secretsmanager.put_secret_value for secrets)",
                retryable=False,
            )
        if current.get("Value") == inputs.value and current.get("Type") == inputs.type:
            ctx.note(f"SSM parameter {inputs.name} already holds the value")
            version = int(current["Version"])
            return {**outputs, "version": version, "previous_value": inputs.value, "changed": False}
        if not inputs.overwrite:
            raise ActionError(
                f"SSM parameter {inputs.name} exists with another value and overwrite is false",
                retryable=False,
            )
    put = call(
        lambda: ssm.put_parameter(
            Name=inputs.name, Value=inputs.value, Type=inputs.type, Overwrite=current is not None
        ),
        f"SSM PutParameter on parameter {inputs.name}",
    )
    previous = None if current is None else current.get("Value")
    return {**outputs, "version": int(put["Version"]), "previous_value": previous, "changed": True}


@put_parameter.simulate
def _put_parameter_simulate(inputs: PutParameter, ctx: ActionContext) -> Outputs:
    return simulated(
        f"set SSM parameter {inputs.name} to {inputs.value!r}",
        name=inputs.name, value=inputs.value, version=None, previous_value=None, changed=None,
    )  # fmt: skip


@put_parameter.probe
def _put_parameter_probe(inputs: PutParameter, ctx: ActionContext) -> Probe:
    ssm = aws("ssm", ctx)
    current = _parameter(ssm, inputs.name)
    if current is None:
        return Probe.not_done("the parameter does not exist")
    if current.get("Value") != inputs.value:
        return Probe.not_done("the parameter holds another value")
    version = int(current["Version"])
    return Probe.done(
        {"name": inputs.name, "value": inputs.value, "version": version,
         "previous_value": _value_before(ssm, inputs.name, version), "changed": None}
    )  # fmt: skip
