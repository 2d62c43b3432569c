"""The BatchJobSchedule schema: SDK-derived (:mod:`.sdkmodels`), assembled into a CRD (:mod:`.crd`)."""
