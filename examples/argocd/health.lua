-- Argo CD health check for azurebatch.dev/BatchJobSchedule (batchop).
-- Install: argocd-cm key resource.customizations.health.azurebatch.dev_BatchJobSchedule (see
-- examples/argocd/argocd-cm-patch.yaml and docs/install.md). Lua 5.1 (Argo CD's gopher-lua).
--
-- How status maps to health (docs/operator.md has the table of every condition reason):
--   Degraded     Stalled=True for the current generation (kstatus' Failed): a person must act. The
--                operator sets it for an invalid spec, an id owned by someone else, refused or missing
--                credentials, a missing blob container, a workload-identity set-up error, a quota
--                (QuotaReached, ActiveJobAndScheduleQuotaReached) and a job that cannot run
--                (QuotaExceeded, AllocationFailed, StartTaskFailed, JobStuck: the message says what to
--                do; it clears by itself when Batch recovers). Statuses without Stalled (written before
--                the operator wrote it) are judged by the same reasons (TERMINAL below) on Synced or
--                Ready. Also: the schedule's most recent job failed (until a later job succeeds: the
--                message names the first failed task and its cause, as the JobFailed Event does); or
--                reconcile-policy: skip and Batch has no such schedule.
--   Suspended    spec.suspend is true and Batch reports the schedule disabled (Ready reason Suspended).
--   Progressing  no status yet, or Ready Unknown (the first pass runs); the operator has not yet applied
--                the current generation; Reconciling=True: a recoverable error it is retrying (Throttled,
--                BatchUnavailable, Conflict ...); the schedule being created, suspended, resumed,
--                terminated or deleted (also during Batch's terminating and deleting windows).
--   Healthy      the schedule exists in Batch as declared (Ready True: Active or Completed) and its last
--                job, if any, did not fail. Healthy as soon as the schedule exists, before its first run.
local hs = {}

local TERMINAL = {
  QuotaReached = true,
  ActiveJobAndScheduleQuotaReached = true,
  QuotaExceeded = true,
  AllocationFailed = true,
  StartTaskFailed = true,
  JobStuck = true,
  InvalidSpec = true,
  AlreadyExists = true,
  AuthenticationFailed = true,
  Forbidden = true,
  ScheduleIdImmutable = true,
  CredentialsNotFound = true,
  AccountNotConfigured = true,
  ContainerNotFound = true,
  StorageAuthenticationFailed = true,
  FederatedSubjectMismatch = true,
  FederatedAudienceMismatch = true,
  FederatedIssuerMismatch = true,
  FederatedCredentialMismatch = true,
  FederatedTokenExpired = true,
  FederatedTokenInvalid = true,
  FederatedTokenFileMissing = true,
  IdentityNotFound = true,
  WorkloadIdentityNotConfigured = true,
  BatchRoleMissing = true,
}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.reason or "Unknown"
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local function describe_task(t)
  -- the first failed task and its cause, in batchop's words (batchop.spec.failures.describe)
  local id = t.id or "?"
  local f = t.failureInfo or {}
  if t.exitCode ~= nil and (f.code == nil or f.code == "FailureExitCode") then
    return "task " .. id .. " exited with " .. t.exitCode
  end
  if f.code ~= nil then
    if f.message ~= nil and f.message ~= "" then
      return "task " .. id .. " failed: " .. f.code .. ": " .. f.message
    end
    return "task " .. id .. " failed: " .. f.code
  end
  return "task " .. id .. " failed"
end

local function lags(c, generation)
  -- true when a condition was computed for an older generation of the spec
  return generation ~= nil and c ~= nil and c.observedGeneration ~= nil and c.observedGeneration < generation
end

local status = obj.status
local spec = obj.spec or {}
local generation = obj.metadata and obj.metadata.generation or nil
local ready = condition(status, "Ready")
local synced = condition(status, "Synced")
local stalled = condition(status, "Stalled")

if ready == nil and synced == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for batchop to reconcile the schedule"
  return hs
end

-- 1. Stalled: a person must act (the spec, credentials, a quota, the pool's image or start task).
if stalled ~= nil then
  if stalled.status == "True" and not lags(stalled, generation) then
    hs.status = "Degraded"
    hs.message = describe(stalled)
    return hs
  end
else
  -- a status written before the operator wrote Stalled: the same reasons, on Synced or Ready
  if synced ~= nil and synced.status == "False" and TERMINAL[synced.reason] and not lags(synced, generation) then
    hs.status = "Degraded"
    hs.message = describe(synced)
    return hs
  end
  if ready ~= nil and ready.status == "False" and TERMINAL[ready.reason] then
    hs.status = "Degraded"
    hs.message = describe(ready)
    return hs
  end
end

-- 2. Observe-only resources (reconcile-policy: skip): health is what Batch reports (a missing schedule is
--    Stalled in statuses that have it, rule 1).
local skipped = synced ~= nil and synced.reason == "ReconcileSkipped"
if stalled == nil and skipped and ready ~= nil and ready.status == "False" and ready.reason == "NotFound" then
  hs.status = "Degraded"
  hs.message = "Observe only (reconcile-policy: skip), and " .. describe(ready)
  return hs
end

-- 3. The operator has not caught up with the latest spec edit yet (an observe-only resource written before
--    observedGeneration was written on every outcome has none: it is not waited for).
local observed = status.observedGeneration
if generation ~= nil and ((observed == nil and not skipped) or (observed ~= nil and observed < generation)) then
  hs.status = "Progressing"
  if synced ~= nil and synced.status == "False" then
    hs.message = "Applying generation " .. generation .. ": " .. describe(synced)
  else
    hs.message = "Applying generation " .. generation
  end
  return hs
end

-- 4. Suspension (spec.suspend), once Batch reports the schedule disabled.
if spec.suspend == true then
  if ready ~= nil and ready.status == "True" and ready.reason == "Suspended" then
    hs.status = "Suspended"
    hs.message = describe(ready)
  else
    hs.status = "Progressing"
    hs.message = "Suspending the schedule"
  end
  return hs
end

-- 5. The schedule does not exist (yet) or is going away.
if ready == nil or ready.status ~= "True" then
  hs.status = "Progressing"
  if ready ~= nil then
    hs.message = describe(ready)
  elseif synced ~= nil then
    hs.message = describe(synced)
  else
    hs.message = "Waiting for Batch"
  end
  return hs
end

-- 6. The schedule exists. A resume in flight, a recoverable error on the last write, a failed last job.
if ready.reason == "Suspended" then
  if skipped then
    hs.status = "Suspended"
    hs.message = "Observe only (reconcile-policy: skip): " .. describe(ready)
  else
    hs.status = "Progressing"
    hs.message = "Resuming the schedule"
  end
  return hs
end
if synced ~= nil and synced.status == "False" then
  hs.status = "Progressing"
  hs.message = "Retrying: " .. describe(synced)
  return hs
end
local job = status.recentJob
if job ~= nil and job.result == "failure" then
  hs.status = "Degraded"
  local detail = ""
  if job.schedulingError ~= nil and job.schedulingError.message ~= nil then
    detail = ": " .. job.schedulingError.message
  elseif job.failedTasks ~= nil and job.failedTasks[1] ~= nil then
    detail = ": " .. describe_task(job.failedTasks[1])
    local others = (job.failedTaskCount or #job.failedTasks) - 1
    if #job.failedTasks - 1 > others then
      others = #job.failedTasks - 1
    end
    if others > 0 then
      detail = detail .. " (and " .. others .. " more)"
    end
  elseif job.taskCounts ~= nil and job.taskCounts.failed ~= nil then
    detail = ": " .. job.taskCounts.failed .. " task(s) failed"
  end
  hs.message = "Last job " .. (job.id or "?") .. " failed" .. detail
  return hs
end

hs.status = "Healthy"
if ready.reason == "Completed" then
  hs.message = describe(ready)
elseif job ~= nil and job.id ~= nil then
  hs.message = describe(ready) .. "; last job " .. job.id .. " " .. (job.result or job.state or "")
else
  hs.message = describe(ready)
end
return hs
