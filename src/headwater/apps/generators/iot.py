"""A fleet of temperature and humidity sensors, a few of which drift out of range.

Every sensor holds a mean-reverting random walk around its own baseline. One sensor in
four is faulty and drifts steadily, each starting later than the one before:

```
kind    drifts                 crosses its limit after about
hot     temperature up         40, 120, 200, ... of its own readings
cold    temperature down
humid   humidity up
```

A drifting value stops at a plateau well past the limit (a stuck heater stays stuck), and
any sensor may, rarely, report a one-off glitch. The fleet knows nothing of the limits a
monitor applies; it only makes the data that breaks them.
"""

from __future__ import annotations

import dataclasses
import json
import random

__all__ = ["IotFleet", "Reading"]

_GLITCH_PROBABILITY = 0.001
_REVERSION = 0.1
_KINDS = ("hot", "humid", "cold")
# Where a drifting value settles, and how many readings it takes to get from baseline
# past the first limit a monitor would use (40 °C, 90 %, -10 °C), for the n-th faulty sensor.
_PLATEAU = {"hot": 55.0, "humid": 98.0, "cold": -25.0}
_FIRST_CROSSING = 40
_CROSSING_STEP = 80


@dataclasses.dataclass(frozen=True, slots=True)
class Reading:
    """One measurement of one sensor.

    Attributes:
        sensor_id: e.g. "sensor-007"; also the record key, so a sensor keeps its partition.
        seq: how many readings this sensor made before this one.
        timestamp_ms: milliseconds since the epoch, as given to `IotFleet.reading`.
        temperature_c: degrees Celsius, one decimal.
        humidity_pct: relative humidity in percent, one decimal.
    """

    sensor_id: str
    seq: int
    timestamp_ms: int
    temperature_c: float
    humidity_pct: float

    @property
    def key(self) -> bytes:
        """The record key: the sensor id."""
        return self.sensor_id.encode()

    def to_json(self) -> bytes:
        """The record value: a JSON object with the fields above."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Reading:
        """The reading `to_json` wrote.

        Raises:
            ValueError: `data` is not a JSON reading.
        """
        try:
            raw = json.loads(data)
            return cls(
                str(raw["sensor_id"]),
                int(raw["seq"]),
                int(raw["timestamp_ms"]),
                float(raw["temperature_c"]),
                float(raw["humidity_pct"]),
            )
        except (KeyError, TypeError) as exc:
            msg = f"not a sensor reading: {data[:80]!r}"
            raise ValueError(msg) from exc


@dataclasses.dataclass(slots=True)
class _Sensor:
    sensor_id: str
    base_temperature: float
    base_humidity: float
    temperature: float
    humidity: float
    kind: str | None
    drift_start: int
    drift_per_reading: float
    readings: int = 0


class IotFleet:
    """Readings of `sensors` sensors, round robin, deterministic for a given `seed`.

    Args:
        sensors: how many sensors (at least 1).
        seed: the random seed; two fleets with the same seed and the same timestamps
            produce the same readings.
        faulty: how many sensors drift (default: one in four, at least one).

    Example:
        >>> fleet = IotFleet(sensors=3, seed=1)
        >>> [fleet.reading(1000 + i).sensor_id for i in range(4)]
        ['sensor-000', 'sensor-001', 'sensor-002', 'sensor-000']
    """

    def __init__(self, sensors: int = 12, *, seed: int = 0, faulty: int | None = None) -> None:
        if sensors < 1:
            msg = f"sensors={sensors}; a fleet needs at least one sensor"
            raise ValueError(msg)
        self._random = random.Random(seed)
        count = max(1, sensors // 4) if faulty is None else min(faulty, sensors)
        faulty_ids = set(self._random.sample(range(sensors), count))
        self._sensors: list[_Sensor] = []
        nth = 0
        for index in range(sensors):
            kind = None
            if index in faulty_ids:
                kind = _KINDS[nth % len(_KINDS)]
                nth += 1
            self._sensors.append(self._make_sensor(index, kind, nth))
        self._next = 0

    @property
    def sensor_ids(self) -> list[str]:
        """Ids of every sensor, in the order they report."""
        return [s.sensor_id for s in self._sensors]

    @property
    def faulty_ids(self) -> list[str]:
        """Ids of the sensors that drift out of range."""
        return [s.sensor_id for s in self._sensors if s.kind is not None]

    def _make_sensor(self, index: int, kind: str | None, nth: int) -> _Sensor:
        rnd = self._random
        temperature = round(rnd.uniform(18.0, 26.0), 1)
        humidity = round(rnd.uniform(35.0, 60.0), 1)
        start = self._random.randint(5, 20)
        per_reading = 0.0
        if kind is not None:
            crossing = _FIRST_CROSSING + (nth - 1) * _CROSSING_STEP
            distance = {"hot": 40.0 - temperature, "cold": -10.0 - temperature}.get(
                kind, 90.0 - humidity
            )
            per_reading = distance / crossing * 1.05
        return _Sensor(
            f"sensor-{index:03d}",
            temperature,
            humidity,
            temperature,
            humidity,
            kind,
            start,
            per_reading,
        )

    def reading(self, timestamp_ms: int) -> Reading:
        """The next sensor's next reading, stamped `timestamp_ms`."""
        sensor = self._sensors[self._next]
        self._next = (self._next + 1) % len(self._sensors)
        rnd = self._random
        sensor.temperature += _REVERSION * (sensor.base_temperature - sensor.temperature)
        sensor.temperature += rnd.gauss(0.0, 0.3)
        sensor.humidity += _REVERSION * (sensor.base_humidity - sensor.humidity)
        sensor.humidity += rnd.gauss(0.0, 0.8)
        temperature, humidity = sensor.temperature, sensor.humidity
        if sensor.kind is not None and sensor.readings >= sensor.drift_start:
            drift = sensor.drift_per_reading * (sensor.readings - sensor.drift_start)
            if sensor.kind == "humid":
                humidity = min(humidity + drift, _PLATEAU["humid"])
            elif sensor.kind == "hot":
                temperature = min(temperature + drift, _PLATEAU["hot"])
            else:
                temperature = max(temperature + drift, _PLATEAU["cold"])
        if rnd.random() < _GLITCH_PROBABILITY:
            temperature = 85.0
        reading = Reading(
            sensor.sensor_id,
            sensor.readings,
            timestamp_ms,
            round(temperature, 1),
            round(min(max(humidity, 0.0), 100.0), 1),
        )
        sensor.readings += 1
        return reading
