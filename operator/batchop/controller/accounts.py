"""Which Batch account and gateway a resource uses, and the credential refresh of each account's poller.

Resolution itself (Secret, endpoint, operator defaults) and the gateways per credential are
:mod:`batchop.batch.credentials`. This keeps, per account, the spec of a resource that used it (the last
one Batch answered), so the account's poller can re-resolve the credentials each cycle: a rotated Secret
gives a new gateway without a restart and without waiting for a reconcile.

It also hands out the process's one Entra ID credential (:attr:`AccountResolver.entra`): the Batch gateways
without a key and the Blob storage user-delegation SAS sign in with the same identity (on AKS: workload
identity), so one token file, one token cache and one set of sign-in errors serve both.
"""

from __future__ import annotations

from batchop.api.types import Spec
from batchop.batch.credentials import AccountRef, Accounts, CredentialError, EntraCredential, SecretSource, resolve
from batchop.batch.gateway import Gateway
from batchop.batch.settings import Settings
from batchop.controller.reconcile.view import ObjectView


class AccountResolver:
    """Resolves resources to accounts and gateways; re-resolves an account's credentials for its poller."""

    def __init__(self, settings: Settings, secrets: SecretSource) -> None:
        self.settings = settings
        self.secrets = secrets
        self.accounts = Accounts(settings)
        self._specs: dict[str, tuple[str, Spec]] = {}  # endpoint -> (namespace, spec) to re-resolve

    @property
    def entra(self) -> EntraCredential:
        """The Entra ID credential of every account without a key, for Blob storage too."""
        return self.accounts.entra

    async def resolve(self, view: ObjectView) -> AccountRef:
        """The resource's account and credential. Raises :class:`~batchop.batch.credentials.CredentialError`."""
        return await resolve(view.namespace, view.spec, self.settings, self.secrets)

    def gateway_for(self, ref: AccountRef, view: ObjectView) -> Gateway:
        """The gateway of ``ref``'s credential; the first resource of an account is remembered for refreshes."""
        if ref.endpoint_key not in self._specs:
            self._specs[ref.endpoint_key] = (view.namespace, view.spec.copy())
        return self.accounts.gateway_for(ref)

    def deletion_gateway(self, ref: AccountRef) -> Gateway:
        """The gateway of ``ref``'s credential, for a deletion step."""
        return self.accounts.gateway_for(ref)

    def promote(self, ref: AccountRef, view: ObjectView) -> None:
        """Batch answered with ``ref``'s credentials: the account's poller uses them, and refreshes from
        this resource's spec."""
        self.accounts.promote(ref)
        self._specs[ref.endpoint_key] = (view.namespace, view.spec.copy())

    def current(self, endpoint_key: str) -> Gateway | None:
        """The gateway the account's poller uses."""
        return self.accounts.current(endpoint_key)

    async def refresh(self, endpoint_key: str) -> None:
        """Re-resolve the account's credentials (cached Secret read) so a rotated key is used."""
        found = self._specs.get(endpoint_key)
        if found is None:
            return
        try:
            ref = await resolve(found[0], found[1], self.settings, self.secrets)
        except CredentialError:
            return
        if ref.endpoint_key == endpoint_key:
            self.accounts.gateway_for(ref)

    async def close(self) -> None:
        await self.accounts.close()
