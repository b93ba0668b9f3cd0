"""Read job schedules and compute their fires.

A schedule is a five-field cron expression with cronie's semantics (lists,
ranges, steps, names; day-of-month and day-of-week ORed unless one begins with
`*`; cronie's daylight-saving rules), one of cronie's macros, or `@every
<duration>`. `parse_schedule` refuses everything else with a ScheduleError that
names the field and the value. Evaluation of cron fields is delegated to cronsim;
docs/schedules.md explains the choice and the one correction applied on top.

Modules: `parse` (entry point, macros), `fields` (cron field parsing and
refusals), `cron` (cronsim wrapper), `every` (intervals), `describe` (English
readings), `timezones` (IANA names), `base` (the Schedule contract).
"""

from socmeth.schedule.base import Schedule
from socmeth.schedule.cron import CronSchedule
from socmeth.schedule.every import IntervalSchedule
from socmeth.schedule.parse import MACROS, parse_schedule
from socmeth.schedule.timezones import validate_timezone

__all__ = [
    "MACROS",
    "CronSchedule",
    "IntervalSchedule",
    "Schedule",
    "parse_schedule",
    "validate_timezone",
]
