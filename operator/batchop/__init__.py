"""batchop: Azure Batch job schedules as Kubernetes resources."""

__version__ = "0.1.0"

GROUP = "azurebatch.dev"
VERSION = "v1alpha1"
KIND = "BatchJobSchedule"
PLURAL = "batchschedules"
SHORT_NAME = "bjs"
PREFIX = GROUP  # prefix of every label, annotation, finalizer and Batch metadata name we write
