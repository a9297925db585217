"""The end-to-end scenario: every user action through the SDK, against a gateway URL."""

from ehr_client.demo.scenario import Endpoints, Scenario, ScenarioFailed, ScenarioResult

__all__ = ["Endpoints", "Scenario", "ScenarioFailed", "ScenarioResult"]
