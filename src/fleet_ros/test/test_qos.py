from pathlib import Path

import yaml
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

from fleet_ros import qos

CONFIG = Path(__file__).resolve().parents[3] / 'config' / 'qos.yaml'


def test_config_qos_yaml_documents_every_profile_exactly():
    documented = yaml.safe_load(CONFIG.read_text())
    assert set(documented) == set(qos.PROFILES)
    for name, profile in qos.PROFILES.items():
        doc = documented[name]
        assert doc['depth'] == profile.depth, name
        assert ReliabilityPolicy[doc['reliability'].upper()] == profile.reliability, name
        assert DurabilityPolicy[doc['durability'].upper()] == profile.durability, name
