//! The rules of a listing's related resources: its media (ordered references, at most
//! `MAX_MEDIA`) and its open houses.

use super::*;

impl ListingState {
    pub(super) fn add_media(&self, c: AddMedia) -> Result<ListingEvent, ListingError> {
        self.refuse_if_deleted()?;
        if self.media.iter().any(|m| m.media_key == c.media_key) {
            return Err(ListingError::exists(
                "MediaKey",
                "the listing already has media with this MediaKey",
            ));
        }
        if self.media.len() >= MAX_MEDIA {
            return Err(ListingError::rule(
                "MediaKey",
                "media-limit",
                format!("a listing holds at most {MAX_MEDIA} media"),
            ));
        }
        let len = u32::try_from(self.media.len()).unwrap_or(u32::MAX);
        let order = c.order.unwrap_or(len);
        if order > len {
            return Err(ListingError::rule(
                "Order",
                "out-of-range",
                format!("Order must be between 0 and {len}"),
            ));
        }
        Ok(ListingEvent::MediaAdded(MediaAdded {
            media_key: c.media_key,
            media_url: c.media_url,
            media_category: c.media_category,
            short_description: c.short_description,
            order,
            modification_timestamp: c.at,
        }))
    }

    pub(super) fn remove_media(&self, c: RemoveMedia) -> Result<ListingEvent, ListingError> {
        self.refuse_if_deleted()?;
        if !self.media.iter().any(|m| m.media_key == c.media_key) {
            return Err(ListingError::not_found(
                Some("MediaKey"),
                "the listing has no media with this MediaKey",
            ));
        }
        Ok(ListingEvent::MediaRemoved(MediaRemoved {
            media_key: c.media_key,
            modification_timestamp: c.at,
        }))
    }

    pub(super) fn reorder_media(&self, c: ReorderMedia) -> Result<Vec<ListingEvent>, ListingError> {
        self.refuse_if_deleted()?;
        let mut wanted: Vec<&ShortText> = c.media_keys.iter().collect();
        let mut have: Vec<&ShortText> = self.media.iter().map(|m| &m.media_key).collect();
        wanted.sort();
        have.sort();
        if wanted != have {
            return Err(ListingError::rule(
                "MediaKeys",
                "not-a-permutation",
                "MediaKeys must list every MediaKey of the listing exactly once",
            ));
        }
        if self
            .media
            .iter()
            .map(|m| &m.media_key)
            .eq(c.media_keys.iter())
        {
            return Ok(Vec::new());
        }
        Ok(vec![ListingEvent::MediaReordered(MediaReordered {
            media_keys: c.media_keys,
            modification_timestamp: c.at,
        })])
    }

    pub(super) fn schedule_open_house(
        &self,
        c: ScheduleOpenHouse,
    ) -> Result<ListingEvent, ListingError> {
        if !lifecycle::allows_open_house(self.standard_status) {
            return Err(ListingError::rule(
                "StandardStatus",
                "open-house-not-allowed",
                format!(
                    "open houses can be scheduled for Coming Soon, Active or Active Under Contract listings, not {}",
                    self.standard_status
                ),
            ));
        }
        if self
            .open_houses
            .iter()
            .any(|o| o.open_house_key == c.open_house_key)
        {
            return Err(ListingError::exists(
                "OpenHouseKey",
                "the listing already has an open house with this OpenHouseKey",
            ));
        }
        if self.open_houses.len() >= MAX_OPEN_HOUSES {
            return Err(ListingError::rule(
                "OpenHouseKey",
                "open-house-limit",
                format!("a listing holds at most {MAX_OPEN_HOUSES} open houses"),
            ));
        }
        let duration = c.open_house_end_time - c.open_house_start_time;
        if duration <= chrono::TimeDelta::zero() {
            return Err(ListingError::rule(
                "OpenHouseEndTime",
                "end-before-start",
                "OpenHouseEndTime must be after OpenHouseStartTime",
            ));
        }
        if duration > chrono::TimeDelta::hours(MAX_OPEN_HOUSE_HOURS) {
            return Err(ListingError::rule(
                "OpenHouseEndTime",
                "too-long",
                format!("an open house lasts at most {MAX_OPEN_HOUSE_HOURS} hours"),
            ));
        }
        Ok(ListingEvent::OpenHouseScheduled(OpenHouseScheduled {
            open_house_key: c.open_house_key,
            open_house_date: c.open_house_date,
            open_house_start_time: c.open_house_start_time,
            open_house_end_time: c.open_house_end_time,
            open_house_type: c.open_house_type,
            open_house_remarks: c.open_house_remarks,
            showing_agent_key: c.showing_agent_key,
            modification_timestamp: c.at,
        }))
    }

    pub(super) fn cancel_open_house(
        &self,
        c: CancelOpenHouse,
    ) -> Result<ListingEvent, ListingError> {
        let Some(open_house) = self
            .open_houses
            .iter()
            .find(|o| o.open_house_key == c.open_house_key)
        else {
            return Err(ListingError::not_found(
                Some("OpenHouseKey"),
                "the listing has no open house with this OpenHouseKey",
            ));
        };
        if open_house.open_house_status == OpenHouseStatus::Canceled {
            return Err(ListingError::rule(
                "OpenHouseKey",
                "already-canceled",
                "this open house is already canceled",
            ));
        }
        Ok(ListingEvent::OpenHouseCanceled(OpenHouseCanceled {
            open_house_key: c.open_house_key,
            modification_timestamp: c.at,
        }))
    }
}
